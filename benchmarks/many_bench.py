"""Section ``many``: list / latest / prune over E = 10 ... 10,000 exports (requests and time).

Bases are written directly (one tiny saved_model.pb and a valid marker per export, with one
batched ``fs.pipe``), not by publishing E times. ``list_exports`` is compared, in the same run
and interleaved, with the same number of raw marker GETs sent at the same concurrency: one
batched ``fs.cat`` of the marker paths with ``batch_size=READS_IN_FLIGHT`` (what a hand-written
reader that already knew every marker path would send; it needs no listing).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

from cloud_exporter import __version__, latest_export, list_exports, prune
from cloud_exporter.layout import marker_path, version_dir
from cloud_exporter.marker import MAX_MARKER_BYTES, FileRecord, encode_marker
from cloud_exporter.source import Digests
from cloud_exporter.storage import READS_IN_FLIGHT

from .backends import Store
from .counting import RequestCounts
from .stats import Check, Summary
from .transfer import Log

FIRST_VERSION = 1_600_000_000
KEEP = 5
SIZES = (10, 100, 1_000, 10_000)


@dataclass
class ManyRow:
    """One base of ``exports`` exports on one store."""

    backend: str
    exports: int
    raw_gets: list[float] = field(default_factory=list)
    listing: list[float] = field(default_factory=list)
    list_counts: RequestCounts | None = None
    latest_seconds: float = 0.0
    latest_counts: RequestCounts | None = None
    prune_seconds: float = 0.0
    prune_counts: RequestCounts | None = None

    @property
    def ratios(self) -> list[float]:
        return [o / r for o, r in zip(self.listing, self.raw_gets, strict=True)]

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        for key in ("list_counts", "latest_counts", "prune_counts"):
            value = getattr(self, key)
            out[key] = value.to_dict() if value is not None else None
        return out


def populate(store: Store, prefix: str, exports: int) -> list[str]:
    """Write ``exports`` committed exports; returns their marker paths."""
    base = store.path(prefix)
    objects: dict[str, bytes] = {}
    markers = []
    for i in range(exports):
        version = FIRST_VERSION + i
        data = f"model {version}".encode()
        digests = Digests()
        digests.update(data)
        objects[f"{version_dir(base, version)}/saved_model.pb"] = data
        record = FileRecord("saved_model.pb", len(data), None, digests.crc32c)
        metadata = {"step": i, "metrics": {"loss": 1.0 / (i + 1)}}
        markers.append(marker_path(base, version))
        objects[markers[-1]] = encode_marker(
            version, time.time() - (exports - i), [record], metadata, "bench", __version__
        )
    if store.is_local:
        for path, blob in objects.items():
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(blob)
    else:
        for start in range(0, len(markers), 2_000):  # bounded batches: the emulators are small
            chunk = list(objects.items())[2 * start : 2 * (start + 2_000)]
            store.fs.pipe(dict(chunk))
        store.fs.invalidate_cache()
    return markers


def raw_gets(store: Store, markers: list[str]) -> None:
    store.fs.invalidate_cache()
    if store.is_local:
        for path in markers:
            with open(path, "rb") as f:
                f.read(MAX_MARKER_BYTES + 1)
        return
    got = store.fs.cat(markers, start=0, end=MAX_MARKER_BYTES + 1, batch_size=READS_IN_FLIGHT)
    if len(got) != len(markers):
        raise RuntimeError(f"raw GETs returned {len(got)} of {len(markers)} markers")


def measure(store: Store, exports: int, reps: int, log: Log) -> ManyRow:
    row = ManyRow(store.name, exports)
    prefix = f"many-{exports}"
    uri = store.uri(prefix)
    start = time.perf_counter()
    markers = populate(store, prefix, exports)
    log(f"  {store.name}: {exports} exports written in {time.perf_counter() - start:.1f} s")
    for rep in range(reps + 1):  # the first repetition warms up and is not kept
        order = ("raw", "ours") if rep % 2 == 0 else ("ours", "raw")
        times: dict[str, float] = {}
        for which in order:
            start = time.perf_counter()
            if which == "raw":
                raw_gets(store, markers)
            else:
                with store.counter.measure() as counts:
                    found = list_exports(uri, filesystem=store.fs)
                if len(found) != exports:
                    raise RuntimeError(f"list_exports found {len(found)} of {exports}")
                row.list_counts = counts
            times[which] = time.perf_counter() - start
        if rep:
            row.raw_gets.append(times["raw"])
            row.listing.append(times["ours"])
    with store.counter.measure() as counts:
        start = time.perf_counter()
        info = latest_export(uri, filesystem=store.fs)
        row.latest_seconds = time.perf_counter() - start
    if info is None or info.version != FIRST_VERSION + exports - 1:
        raise RuntimeError("latest_export did not find the newest export")
    row.latest_counts = counts
    with store.counter.measure() as counts:
        start = time.perf_counter()
        report = prune(uri, keep=KEEP, filesystem=store.fs)
        row.prune_seconds = time.perf_counter() - start
    if len(report.deleted) != max(exports - KEEP, 0):
        raise RuntimeError(f"prune deleted {len(report.deleted)} of {exports - KEEP}")
    row.prune_counts = counts
    store.clear(prefix)
    return row


def run_many(store: Store, sizes: tuple[int, ...], reps: int, log: Log) -> list[ManyRow]:
    rows = []
    for exports in sizes:
        log(f"  {store.name}: list/latest/prune over {exports} exports")
        row = measure(store, exports, reps if exports <= 1_000 else 1, log)
        log("  " + render_many([row])[-1])  # each row as soon as it is measured
        rows.append(row)
    return rows


def many_checks(rows: list[ManyRow]) -> list[Check]:
    """Issue 15 target: list of 1,000 exports <= 1.2x the same number of raw marker GETs."""
    checks = []
    for row in rows:
        if row.exports != 1_000 or row.backend == "local" or not row.ratios:
            continue
        ratio = Summary.of(row.ratios)
        checks.append(
            Check.compare(
                "8",
                f"{row.backend}: list_exports of 1000 / 1000 raw marker GETs",
                ratio.median,
                1.2,
                spread=ratio.spread(),
                note=f"n={ratio.n}; {READS_IN_FLIGHT} in flight; {_requests(row.list_counts)}",
            )
        )
    return checks


def _requests(counts: RequestCounts | None) -> str:
    if counts is None:
        return "-"
    return f"{counts.total} ({counts.detail()})" if counts.total else "0 (local disk)"


def render_many(rows: list[ManyRow]) -> list[str]:
    """The E table for docs/performance.md."""
    if not rows:
        return []
    lines = [
        "",
        "### Many exports: list / latest / prune",
        "",
        f"Marker GETs {READS_IN_FLIGHT} in flight; `prune(keep={KEEP})`; ratio = list_exports / "
        "the same number of raw marker GETs at the same concurrency (interleaved, median).",
        "",
        "| Store | E | list s | raw GETs s | list / raw | list requests | latest s | latest "
        "requests | prune s | prune requests |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        ratio = Summary.of(row.ratios) if row.ratios else None
        lines.append(
            f"| {row.backend} | {row.exports:,} | {Summary.of(row.listing).median:.3f} | "
            f"{Summary.of(row.raw_gets).median:.3f} | "
            f"{'-' if ratio is None else f'{ratio.median:.2f} ({ratio.low:.2f}-{ratio.high:.2f})'}"
            f" | {_requests(row.list_counts)} | {row.latest_seconds:.3f} | "
            f"{_requests(row.latest_counts)} | {row.prune_seconds:.3f} | "
            f"{_requests(row.prune_counts)} |"
        )
    return lines
