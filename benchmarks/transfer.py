"""Publish timings against their baselines, interleaved within every repetition.

Object stores (one repetition): raw ``fs.put(recursive)`` of the tree to a fresh prefix, then raw
server-side ``fs.copy(recursive)`` of that prefix (the two passes a staged publish inherently
makes), a staged publish and a direct publish, in an order rotated by one unit per repetition.
Local disk: ``shutil.copytree``, a publish (build beside + rename), and, for reference, a
SHA-256 pass over the source alone (the floor for anything that records checksums).

Everything a repetition wrote is deleted before the next one (untimed), so the servers hold at
most one repetition's objects. One untimed warm-up repetition comes first and also checks that
every operation wrote what it should.
"""

from __future__ import annotations

import gc
import hashlib
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cloud_exporter import publish
from cloud_exporter.layout import MARKER_NAME, STAGING_DIRNAME

from .backends import Store
from .counting import RequestCounts
from .workloads import tree_stats

Log = Callable[[str], None]


@dataclass
class Timings:
    """Seconds per operation and per repetition, ratios per repetition, request counts."""

    backend: str
    workload: str
    files: int
    nbytes: int
    times: dict[str, list[float]] = field(default_factory=dict)
    ratios: dict[str, list[float]] = field(default_factory=dict)
    requests: dict[str, RequestCounts] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "workload": self.workload,
            "files": self.files,
            "bytes": self.nbytes,
            "times": self.times,
            "ratios": self.ratios,
            "requests": {op: c.to_dict() for op, c in self.requests.items()},
        }


def _settle(local: bool) -> None:
    """Untimed, before every timed operation: collect garbage, flush dirty pages to disk."""
    gc.collect()
    if local:
        os.sync()


Unit = tuple[str, list[tuple[str, Callable[[str], None]]]]  # (name, [(op, fn(prefix))])


def _run_reps(
    store: Store,
    timings: Timings,
    units: list[Unit],
    reps: int,
    check: Callable[[str, str], None],
    log: Log,
) -> None:
    """Warm-up + ``reps`` repetitions of ``units``; the ops of a unit run back to back.

    Each unit writes below its own prefix, deleted as soon as the unit is done (after
    ``check(unit name, prefix)`` in the warm-up), so the servers hold one unit's objects at most.
    """
    for rep in range(-1, reps):
        shift = max(rep, 0) % len(units)
        for name, ops in units[shift:] + units[:shift]:
            prefix = f"rep{rep + 1}/{name}"
            for op, fn in ops:
                _settle(store.is_local)
                with store.counter.measure() as counts:
                    start = time.perf_counter()
                    fn(prefix)
                    elapsed = time.perf_counter() - start
                if rep >= 0:
                    timings.times.setdefault(op, []).append(elapsed)
                    timings.requests[op] = counts
            if rep < 0:
                check(name, prefix)
            store.clear(prefix)
        if rep >= 0:
            summary = ", ".join(f"{op} {v[-1]:.2f}s" for op, v in timings.times.items())
            log(f"  {store.name}/{timings.workload} rep {rep + 1}/{reps}: {summary}")


def _expect(what: str, got: int, want: int) -> None:
    if got != want:
        raise RuntimeError(f"benchmark self-check: {what} holds {got} objects, expected {want}")


def run_object_store(
    store: Store, workload: str, src: str, reps: int, concurrency: int, log: Log
) -> Timings:
    files, nbytes = tree_stats(src)
    timings = Timings(store.name, workload, files, nbytes)
    fs = store.fs

    def raw_put(prefix: str) -> None:
        fs.put(src.rstrip("/") + "/", store.path(prefix, "raw") + "/", recursive=True)

    def raw_copy(prefix: str) -> None:
        fs.copy(store.path(prefix, "raw"), store.path(prefix, "raw-copy"), recursive=True)

    def ours(mode: str) -> Callable[[str], None]:
        def run(prefix: str) -> None:
            publish(src, store.uri(prefix, mode), filesystem=fs, mode=mode, concurrency=concurrency)

        return run

    def check(unit: str, prefix: str) -> None:
        if unit == "raw":
            _expect("raw put", store.count_objects(prefix, "raw"), files)
            _expect("raw copy", store.count_objects(prefix, "raw-copy"), files)
            return
        _expect(f"{unit} publish", store.count_objects(prefix, unit), files + 1)
        _expect(f"{unit} staging", store.count_objects(prefix, unit, STAGING_DIRNAME), 0)

    units: list[Unit] = [
        ("raw", [("raw put", raw_put), ("raw copy", raw_copy)]),
        ("staged", [("staged publish", ours("staged"))]),
        ("direct", [("direct publish", ours("direct"))]),
    ]
    _run_reps(store, timings, units, reps, check, log)
    t = timings.times
    timings.ratios["staged / (put + copy)"] = [
        s / (p + c)
        for s, p, c in zip(t["staged publish"], t["raw put"], t["raw copy"], strict=True)
    ]
    timings.ratios["direct / put"] = [
        d / p for d, p in zip(t["direct publish"], t["raw put"], strict=True)
    ]
    return timings


def sha256_tree(root: str) -> None:
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            digest = hashlib.sha256()
            with open(os.path.join(dirpath, name), "rb") as f:
                while chunk := f.read(1 << 20):
                    digest.update(chunk)


def run_local(
    store: Store, workload: str, src: str, reps: int, concurrency: int, log: Log
) -> Timings:
    files, nbytes = tree_stats(src)
    timings = Timings(store.name, workload, files, nbytes)

    def copytree(prefix: str) -> None:
        shutil.copytree(src, store.path(prefix, "copytree"))

    def sha_only(prefix: str) -> None:
        sha256_tree(src)

    def ours(prefix: str) -> None:
        publish(src, store.path(prefix, "published"), concurrency=concurrency)

    def check(unit: str, prefix: str) -> None:
        if unit != "publish":
            return
        published = store.path(prefix, "published")
        versions = [n for n in os.listdir(published) if n.isdigit()]
        _expect("local publish (versions)", len(versions), 1)
        got, _ = tree_stats(os.path.join(published, versions[0]))
        _expect("local publish", got, files + 1)
        if not os.path.exists(os.path.join(published, versions[0], MARKER_NAME)):
            raise RuntimeError("benchmark self-check: local publish wrote no marker")

    units: list[Unit] = [
        ("copytree", [("copytree", copytree)]),
        ("publish", [("local publish", ours)]),
        ("sha256", [("sha256 pass", sha_only)]),
    ]
    _run_reps(store, timings, units, reps, check, log)
    t = timings.times
    timings.ratios["publish / copytree"] = [
        p / c for p, c in zip(t["local publish"], t["copytree"], strict=True)
    ]
    timings.ratios["sha256 pass / copytree"] = [
        p / c for p, c in zip(t["sha256 pass"], t["copytree"], strict=True)
    ]
    return timings
