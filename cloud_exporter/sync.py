"""Pull committed exports into a local directory that TF Serving polls; never expose a partial one.

Local layout (see docs/serving.md)::

    LOCAL_DIR/<version>/...                       a synced copy: the export's files + its marker
    LOCAL_DIR/<version>/.cloud-exporter-sync.json the sync record: only dirs with one are deleted
    LOCAL_DIR/.cloud-exporter-sync/               everything in flight; TF Serving ignores it
        <version>-<id>/...                        verified files of a download (kept for resume)
        <version>-<id>.parts/<n>                  the file being downloaded (never trusted)
        trash-<version>-<pid>-<n>/                a copy being deleted, renamed out of sight first

``<id>`` is derived from the marker's bytes, so a resumed download only reuses files of the same
export. A version appears in LOCAL_DIR by one ``os.rename`` of a fully verified directory, and
leaves it by one ``os.rename`` into the staging area: a poller never sees a partial version.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
import os
import random
import shutil
import threading
from collections.abc import Callable
from typing import Any

from ._sync_fetch import download_files
from .errors import (
    CloudExporterError,
    CorruptExportError,
    InvalidArgumentError,
    LocationNotFoundError,
    StorageError,
)
from .exports import scan_exports
from .layout import MARKER_NAME, marker_path, parse_version
from .marker import MAX_MARKER_BYTES, ExportInfo, parse_marker
from .retry import DEFAULT_RETRY, RetryPolicy
from .storage import Storage, resolve

log = logging.getLogger(__name__)

SYNC_STAGING_DIRNAME = ".cloud-exporter-sync"
SYNC_RECORD_NAME = ".cloud-exporter-sync.json"
Progress = Callable[[int], None]
_trash_ids = itertools.count()


class VersionGoneError(CloudExporterError):
    """The version was pruned from the base while it was being downloaded (internal)."""


class SyncStopped(CloudExporterError):
    """The stop event was set; the current version was abandoned (internal)."""


def sync_exports(
    base: str,
    local_dir: str | os.PathLike[str],
    *,
    keep: int | None = None,
    filesystem: Any = None,
    storage_options: dict[str, Any] | None = None,
    retry: RetryPolicy = DEFAULT_RETRY,
    progress: Progress | None = None,
    stop: threading.Event | None = None,
    concurrency: int = 8,
) -> list[ExportInfo]:
    """Download every committed export of ``base`` missing from ``local_dir``; return those added.

    Each version is downloaded into ``local_dir/.cloud-exporter-sync/``, verified against its
    marker (sizes and checksums), then renamed into ``local_dir/<version>``. With ``keep``, only
    the newest ``keep`` exports are fetched and older synced copies are deleted once the newer
    ones are in place; directories sync did not create are never touched. Setting ``stop``
    abandons the version in progress (its verified files stay staged for the next run).
    """
    keep = _check_keep(keep)
    root_dir = _check_local_dir(local_dir)
    fs, root = resolve(base, filesystem, storage_options)
    storage = Storage(fs, retry, concurrency)
    if storage.is_local and not os.path.isdir(root):
        raise LocationNotFoundError(
            f"base {base!r} does not exist: publish to it first, or fix the path"
        )
    staging = os.path.join(root_dir, SYNC_STAGING_DIRNAME)
    os.makedirs(staging, exist_ok=True)
    _empty_trash(staging)

    # invalidate_cache(prefix) keeps the cached listings of subdirectories, and the batched marker
    # read trusts them: a poll loop would never see a marker that appeared after an earlier poll.
    fs.invalidate_cache()
    exports, _invalid = scan_exports(storage, root)
    if not exports:
        log.warning("no committed export under %s yet", storage.uri(root))
    wanted = exports[-keep:] if keep else exports
    local = _local_versions(root_dir)
    todo = []
    for info in wanted:
        if info.version in local:
            if not local[info.version]:
                log.warning(
                    "%s exists but was not created by sync: leaving it alone",
                    os.path.join(root_dir, str(info.version)),
                )
            continue
        todo.append(info)
    _drop_stale_staging(staging, {_stage_name(i) for i in todo})

    added = []
    for info in reversed(todo):  # newest first: that is the one TF Serving serves
        if stop is not None and stop.is_set():
            break
        try:
            _sync_one(storage, root, root_dir, staging, info, progress, stop)
        except VersionGoneError as exc:
            log.info("%s", exc)
            continue
        except CorruptExportError as exc:
            log.error("not syncing version %d: %s", info.version, exc)
            continue
        except SyncStopped:
            log.info("stopped; version %d abandoned (verified files kept)", info.version)
            break
        added.append(info)
    if keep:
        _keep_newest(root_dir, staging, keep)
    return sorted(added, key=lambda i: i.version)


def watch(
    base: str,
    local_dir: str | os.PathLike[str],
    *,
    interval: float = 30.0,
    max_backoff: float = 300.0,
    stop: threading.Event | None = None,
    on_synced: Callable[[list[ExportInfo]], None] | None = None,
    **options: Any,
) -> None:
    """Run :func:`sync_exports` every ``interval`` seconds (with jitter) until ``stop`` is set.

    Storage failures (throttling, outages, missing bucket, denied access) are logged and retried
    with exponential backoff and full jitter up to ``max_backoff``, indefinitely; invalid
    arguments are raised at once. ``options`` are passed to :func:`sync_exports`.
    """
    if not interval > 0 or not max_backoff >= interval:
        raise InvalidArgumentError(
            f"interval must be > 0 and max_backoff >= interval (got {interval!r}, {max_backoff!r})"
        )
    _check_keep(options.get("keep"))
    _check_local_dir(local_dir)
    stop = stop or threading.Event()
    failures = 0
    while not stop.is_set():
        try:
            added = sync_exports(base, local_dir, stop=stop, **options)
        except (StorageError, OSError, LocationNotFoundError) as exc:
            failures += 1
            wait = random.uniform(0, min(max_backoff, interval * 2**failures))
            log.warning("sync failed (%s: %s); retrying in %.1f s", type(exc).__name__, exc, wait)
        else:
            failures = 0
            wait = interval * random.uniform(0.9, 1.1)
            if added and on_synced is not None:
                on_synced(added)
        stop.wait(wait)


# -- one version --------------------------------------------------------------------------------
def _sync_one(
    storage: Storage,
    base: str,
    root_dir: str,
    staging: str,
    info: ExportInfo,
    progress: Progress | None,
    stop: threading.Event | None,
) -> None:
    marker = storage.read_bytes(marker_path(base, info.version), MAX_MARKER_BYTES)
    if marker is None:
        raise VersionGoneError(f"version {info.version} was pruned before its download started")
    info = parse_marker(marker, info.version, info.uri)  # the bytes we copy are the ones we check
    stage = os.path.join(staging, _stage_name(info))
    parts = stage + ".parts"
    shutil.rmtree(parts, ignore_errors=True)  # a killed run's partial files are never trusted
    try:
        gone = download_files(storage, base, info, stage, progress, stop)
    except CorruptExportError:
        _abandon(stage, parts)
        raise
    shutil.rmtree(parts, ignore_errors=True)
    if gone:
        if storage.read_bytes(marker_path(base, info.version), MAX_MARKER_BYTES) is None:
            _abandon(stage, parts)
            raise VersionGoneError(
                f"version {info.version} was pruned from the base during its download; abandoned"
            )
        _abandon(stage, parts)
        raise CorruptExportError(f"{info.uri} is missing {gone[0]} although its marker exists")
    if stop is not None and stop.is_set():
        raise SyncStopped(f"stopped while syncing version {info.version}")
    _write_file(os.path.join(stage, MARKER_NAME), marker)
    record = {"base": storage.uri(base), "version": info.version, "marker_sha256": _id(marker)}
    _write_file(os.path.join(stage, SYNC_RECORD_NAME), json.dumps(record).encode())
    target = os.path.join(root_dir, str(info.version))
    try:
        os.rename(stage, target)  # atomic: TF Serving sees all of it or nothing
    except OSError:
        if not os.path.isdir(target):
            raise
        log.warning("%s appeared meanwhile (another sync?); keeping it", target)
        shutil.rmtree(stage, ignore_errors=True)
        return
    _fsync_dir(root_dir)
    log.info("synced version %d into %s", info.version, target)


# -- local directory ----------------------------------------------------------------------------
def _local_versions(root_dir: str) -> dict[int, bool]:
    """{version: created by sync} for every integer directory in LOCAL_DIR."""
    found = {}
    for name in os.listdir(root_dir):
        version = parse_version(name)
        path = os.path.join(root_dir, name)
        if version is not None and os.path.isdir(path):
            found[version] = os.path.isfile(os.path.join(path, SYNC_RECORD_NAME))
    return found


def _keep_newest(root_dir: str, staging: str, keep: int) -> None:
    ours = sorted(v for v, by_sync in _local_versions(root_dir).items() if by_sync)
    for version in ours[:-keep]:
        trash = os.path.join(staging, f"trash-{version}-{os.getpid()}-{next(_trash_ids)}")
        os.rename(os.path.join(root_dir, str(version)), trash)  # out of sight in one step
        shutil.rmtree(trash, ignore_errors=True)
        log.info("deleted local copy of version %d (keep=%d)", version, keep)


def _drop_stale_staging(staging: str, wanted: set[str]) -> None:
    """Delete staged downloads of versions no longer wanted (pruned, present, beyond keep)."""
    for name in os.listdir(staging):
        if name.removesuffix(".parts") not in wanted:
            _remove(os.path.join(staging, name))


def _empty_trash(staging: str) -> None:
    for name in os.listdir(staging):
        if name.startswith("trash-"):
            _remove(os.path.join(staging, name))


def _abandon(stage: str, parts: str) -> None:
    shutil.rmtree(parts, ignore_errors=True)
    shutil.rmtree(stage, ignore_errors=True)


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)


def _stage_name(info: ExportInfo) -> str:
    return f"{info.version}-{_info_id(info)}"


def _info_id(info: ExportInfo) -> str:
    """Identifies the export's content (its file list), stable across runs."""
    listing = "\n".join(f"{f.path}\0{f.size}\0{f.crc32c}\0{f.sha256}" for f in info.files)
    return _id(f"{info.created!r}\0{info.writer_id}\0{listing}".encode())


def _id(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def _write_file(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


def _fsync_dir(path: str) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _check_keep(keep: object) -> int | None:
    if keep is None:
        return None
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise InvalidArgumentError(
            f"keep must be a positive integer or None (keep everything), got {keep!r}"
        )
    return keep


def _check_local_dir(local_dir: object) -> str:
    if not isinstance(local_dir, (str, os.PathLike)) or not os.fspath(local_dir):
        raise InvalidArgumentError(f"local_dir must be a directory path, got {local_dir!r}")
    path = os.path.abspath(os.fspath(local_dir))
    if os.path.exists(path) and not os.path.isdir(path):
        raise InvalidArgumentError(
            f"local_dir {path} exists and is not a directory: pass the directory TF Serving "
            "polls (its model base path)"
        )
    if "://" in os.fspath(local_dir):
        raise InvalidArgumentError(
            f"local_dir {local_dir!r} must be a local path (TF Serving's model base path), not "
            "a URI"
        )
    os.makedirs(path, exist_ok=True)
    return path
