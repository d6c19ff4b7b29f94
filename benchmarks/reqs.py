"""Request counts of publish, latest and prune, and `cloud-exporter list` on 1,000 exports.

Bases for latest/prune/list are written directly (one small object per file plus a valid
marker per export, through ``fs.pipe``): publishing 1,000 versions one by one would measure
nothing more and take minutes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cloud_exporter import __version__, latest_export, list_exports, prune, publish
from cloud_exporter.layout import STAGING_DIRNAME, marker_path, version_dir
from cloud_exporter.marker import FileRecord, encode_marker
from cloud_exporter.source import Digests

from .backends import Store
from .counting import RequestCounts, fsspec_counts, fsspec_recorder
from .transfer import Log

FIRST_VERSION = 1_700_000_000


@dataclass
class RequestResults:
    backend: str
    publish: dict[str, dict[str, Any]] = field(default_factory=dict)  # mode -> counts
    publish_files: int = 0
    base_exports: int = 0
    base_objects_per_export: int = 0  # SavedModel files + the marker
    latest: RequestCounts | None = None
    prune: RequestCounts | None = None
    pruned: int = 0
    list_exports: int = 0
    list_inprocess: RequestCounts | None = None
    list_inprocess_seconds: float = 0.0
    cli_seconds: list[float] = field(default_factory=list)
    cli_error: str = ""

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        for key in ("latest", "prune", "list_inprocess"):
            value = getattr(self, key)
            out[key] = value.to_dict() if value is not None else None
        out["publish"] = {
            mode: {"http": v["http"].to_dict(), "fsspec": v["fsspec"]}
            for mode, v in self.publish.items()
        }
        return out


def export_files(files: int) -> list[str]:
    names = [
        "saved_model.pb",
        "variables/variables.index",
        "variables/variables.data-00000-of-00001",
    ]
    names += [f"assets/file-{i:03d}.txt" for i in range(max(files - len(names), 0))]
    return names[:files]


def populate(store: Store, prefix: str, exports: int, files: int) -> None:
    """Write ``exports`` committed versions of ``files`` tiny files each, markers included."""
    base = store.path(prefix)
    now = time.time()
    objects: dict[str, bytes] = {}
    for i in range(exports):
        version = FIRST_VERSION + i
        records = []
        for relpath in export_files(files):
            data = f"{version}:{relpath}".encode()
            objects[f"{version_dir(base, version)}/{relpath}"] = data
            digests = Digests(sha256=True)  # markers of format 2 record every file's CRC32C
            digests.update(data)
            records.append(FileRecord(relpath, len(data), digests.sha256, digests.crc32c))
        created = now - (exports - i) * 60.0
        objects[marker_path(base, version)] = encode_marker(
            version, created, records, {"step": i, "loss": 1.0 / (i + 1)}, "bench", __version__
        )
    if store.is_local:
        for path, data in objects.items():
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(data)
    else:
        store.fs.pipe(objects)
        store.fs.invalidate_cache()
    expected = exports * (files + 1)
    if store.count_objects(prefix) != expected:
        raise RuntimeError(f"benchmark self-check: populated base lacks some of {expected} objects")


def publish_counts(store: Store, src: str, files: int, results: RequestResults) -> None:
    """HTTP and fsspec-call counts of one staged and one direct publish of ``src``."""
    results.publish_files = files
    for mode in ("staged", "direct"):
        recorder = fsspec_recorder(store.fs)
        with store.counter.measure() as counts:
            publish(src, store.uri("req-publish", mode), filesystem=recorder or store.fs, mode=mode)
        results.publish[mode] = {
            "http": counts,
            "fsspec": fsspec_counts(recorder) if recorder is not None else {},
        }
    store.clear("req-publish")


def cli_list_seconds(store: Store, base_uri: str, expected: int, reps: int) -> list[float]:
    """Wall time of the ``cloud-exporter list`` command, as a user runs it."""
    script = Path(sys.executable).with_name("cloud-exporter")
    argv = [str(script)] if script.exists() else [sys.executable, "-m", "cloud_exporter"]
    argv += ["list", base_uri, "--json", *store.cli_options()]
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=300)
        times.append(time.perf_counter() - start)
        if proc.returncode != 0:
            raise RuntimeError(f"cloud-exporter list failed: {proc.stderr[-1500:]}")
        listed = len(json.loads(proc.stdout))
        if listed != expected:
            raise RuntimeError(f"cloud-exporter list showed {listed} exports, expected {expected}")
    return times


def run_requests(
    store: Store,
    src: str,
    files: int,
    exports: int,
    per_export: int,
    many: int,
    cli_reps: int,
    log: Log,
) -> RequestResults:
    results = RequestResults(store.name)
    log(f"  {store.name}: request counts of one staged and one direct publish")
    publish_counts(store, src, files, results)

    log(f"  {store.name}: base of {many} exports for `cloud-exporter list`")
    populate(store, "req-many", many, 3)
    results.list_exports = many
    with store.counter.measure() as counts:
        start = time.perf_counter()
        found = list_exports(store.uri("req-many"), filesystem=store.fs)
        results.list_inprocess_seconds = time.perf_counter() - start
    if len(found) != many:
        raise RuntimeError(f"list_exports found {len(found)} of {many} exports")
    results.list_inprocess = counts
    try:
        results.cli_seconds = cli_list_seconds(store, store.uri("req-many"), many, cli_reps)
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        results.cli_error = str(exc)
    store.clear("req-many")

    log(f"  {store.name}: base of {exports} exports x {per_export} files: latest, prune")
    populate(store, "req-base", exports, per_export)
    results.base_exports, results.base_objects_per_export = exports, per_export + 1
    with store.counter.measure() as counts:
        info = latest_export(store.uri("req-base"), filesystem=store.fs)
    if info is None or info.version != FIRST_VERSION + exports - 1:
        raise RuntimeError("latest_export did not find the newest export")
    results.latest = counts
    with store.counter.measure() as counts:
        report = prune(store.uri("req-base"), keep=5, filesystem=store.fs)
    results.prune, results.pruned = counts, len(report.deleted)
    left = store.count_objects("req-base") - store.count_objects("req-base", STAGING_DIRNAME)
    if left != 5 * (per_export + 1):  # staging may keep prune's own bookkeeping
        raise RuntimeError(f"prune left {left} objects, expected {5 * (per_export + 1)}")
    store.clear("req-base")
    return results
