"""Where a publish spends its time: a phase timeline, requests per phase, optional cProfile.

    python -m benchmarks.profile_publish --backend s3 --mode staged [--quick] [--cprofile]

Wraps (in this process only) the library's phase functions and Storage methods with timers,
publishes the synthetic tree a few times and prints the last run's timeline next to the raw
put/copy of the same tree. Names that a later library version no longer has are skipped.
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import importlib
import io
import os
import pstats
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from typing import Any

from .backends import BACKENDS, Store, open_store
from .workloads import PROFILES, make_tree

PHASES = {
    "cloud_exporter.publishing": ("scan_source", "claim_version"),
    "cloud_exporter.commit": (
        "upload_hashed",
        "write_marker",
        "sha256_file",
        "copy_file",
        "_Strategy.cleanup",
    ),
}
STORAGE_METHODS = (
    "upload",
    "copy",
    "list_tree",
    "list_children",
    "create_exclusive",
    "read_bytes",
    "delete",
)
Span = tuple[str, float, float, int]  # name, start, end, thread id


def instrument(spans: list[Span]) -> None:
    """Replace the phase functions with timing wrappers that append to ``spans``."""

    def wrap(owner: Any, name: str) -> None:
        if "." in name:  # Class.method
            cls, name = name.split(".", 1)
            owner = getattr(owner, cls, None)
        original = getattr(owner, name, None)
        if original is None:
            return

        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                spans.append((name, start, time.perf_counter(), threading.get_ident()))

        setattr(owner, name, timed)

    for module_name, names in PHASES.items():
        module = importlib.import_module(module_name)
        for name in names:
            wrap(module, name)
    storage = importlib.import_module("cloud_exporter.storage")
    for name in STORAGE_METHODS:
        wrap(storage.Storage, name)


def timeline(spans: Sequence[Span], t0: float, main: int) -> list[str]:
    """Top-level phases in order, plus totals of the per-file work done in worker threads."""
    lines = []
    per_file: dict[str, list[float]] = {}
    for name, start, end, tid in sorted(spans, key=lambda s: s[1]):
        if tid != main or name in ("sha256_file", "copy_file"):
            per_file.setdefault(name, []).append(end - start)
            continue
        lines.append(f"  {name:18s} {start - t0:8.3f} -> {end - t0:8.3f} s  {end - start:8.3f} s")
    for name, values in sorted(per_file.items()):
        lines.append(
            f"  {name:18s} {len(values)} calls in workers, sum {sum(values):.3f} s, "
            f"longest {max(values):.3f} s"
        )
    return lines


def trace_transfers(fs: Any, out: list[tuple[str, str, float, float]]) -> None:
    """Record each put_file/cp_file the library makes on ``fs`` (instance attributes)."""
    for name in ("put_file", "cp_file"):
        original = getattr(fs, name)

        def traced(
            src: str, dst: str, *args: Any, _f: Any = original, _n: str = name, **kwargs: Any
        ) -> Any:
            start = time.perf_counter()
            try:
                return _f(src, dst, *args, **kwargs)
            finally:
                out.append((_n, str(dst), start, time.perf_counter()))

        setattr(fs, name, traced)


def critical_path(
    transfers: Sequence[tuple[str, str, float, float]], src: str, t0: float
) -> list[str]:
    """When the largest file's transfers ran, relative to all the others."""
    if not transfers:
        return []
    sizes = {}
    for dirpath, _dirs, names in os.walk(src):
        for n in names:
            path = os.path.join(dirpath, n)
            sizes[os.path.relpath(path, src).replace(os.sep, "/")] = os.path.getsize(path)
    largest = max(sizes, key=lambda k: sizes[k])
    lines = []
    for kind in ("put_file", "cp_file"):
        runs = sorted((t for t in transfers if t[0] == kind), key=lambda t: t[2])
        mine = [t for t in runs if t[1].endswith("/" + largest)]
        if not mine:
            continue
        _, _, start, end = mine[0]
        before = sum(1 for t in runs if t[2] < start)
        lines.append(
            f"  {kind}: {len(runs)} calls from {runs[0][2] - t0:.3f} to "
            f"{max(t[3] for t in runs) - t0:.3f} s; the largest file ({largest}, "
            f"{sizes[largest] >> 20} MiB) ran {start - t0:.3f} -> {end - t0:.3f} s, "
            f"after {before} other calls had started"
        )
    return lines


def profile(store: Store, src: str, mode: str, reps: int, use_cprofile: bool) -> None:
    from cloud_exporter import publish

    spans: list[Span] = []
    instrument(spans)
    fs = store.fs
    transfers: list[tuple[str, str, float, float]] = []
    trace_transfers(fs, transfers)
    for rep in range(reps):
        spans.clear()
        transfers.clear()
        prefix = f"profile{rep}"
        profiler = cProfile.Profile() if use_cprofile and rep == reps - 1 else None
        with store.counter.measure() as counts:
            t0 = time.perf_counter()
            if profiler is not None:
                profiler.enable()
            publish(src, store.uri(prefix, "base"), filesystem=fs, mode=mode)
            if profiler is not None:
                profiler.disable()
            total = time.perf_counter() - t0
        raw = ""
        if not store.is_local:
            start = time.perf_counter()
            fs.put(src.rstrip("/") + "/", store.path(prefix, "raw") + "/", recursive=True)
            put = time.perf_counter() - start
            start = time.perf_counter()
            fs.copy(store.path(prefix, "raw"), store.path(prefix, "copy"), recursive=True)
            raw = f"; raw put {put:.3f} s, raw copy {time.perf_counter() - start:.3f} s"
        print(f"run {rep + 1}: {mode} publish {total:.3f} s{raw}")
        store.clear(prefix)
    print(f"timeline of run {reps} (seconds from the start of publish):")
    print("\n".join(timeline(spans, t0, threading.get_ident())))
    print("\n".join(critical_path(transfers, src, t0)))
    print(f"requests: {counts.detail()}")
    if profiler is not None:
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out).sort_stats("cumulative")
        stats.print_stats(25)
        print("cProfile of the calling thread (worker threads are not profiled):")
        print(out.getvalue())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile_publish")
    parser.add_argument("--backend", choices=BACKENDS, default="s3")
    parser.add_argument("--mode", choices=("staged", "direct"), default="staged")
    parser.add_argument("--quick", action="store_true", help="the --quick tree")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--cprofile", action="store_true")
    args = parser.parse_args(argv)
    spec = PROFILES["quick" if args.quick else "default"].tree
    with tempfile.TemporaryDirectory(prefix="cloud-exporter-profile-") as workdir:
        src = make_tree(os.path.join(workdir, "tree"), spec)
        print(f"tree: {spec.describe()}")
        with open_store(args.backend, workdir) as store:
            profile(store, src, args.mode, args.reps, args.cprofile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
