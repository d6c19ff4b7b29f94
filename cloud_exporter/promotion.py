"""Promotion: copy one committed export, server-side, to a serving location.

``flat=False`` makes it a new version of a serving base (committed by its marker, like a
publish); ``flat=True`` replaces the contents of a fixed directory, so that readers of the marker
see the old export, then none, then the new one, and TF Serving-like loaders never see an old
``saved_model.pb`` beside new files. The copies are placed and committed with the
functions of :mod:`cloud_exporter.commit`. Re-exported by :mod:`cloud_exporter.jobs`; see
``docs/cloud-jobs.md``.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from typing import Any

from .commit import check_contents, commit_marker, copy_files, copy_into_place, split_last
from .errors import CorruptExportError, InvalidArgumentError, VersionConflictError
from .exports import checksum_problems, latest_export, list_exports, verify_export
from .layout import MARKER_NAME, SAVED_MODEL_NAMES, claim_path, join, marker_path, version_dir
from .marker import MAX_MARKER_BYTES, ExportInfo, parse_marker
from .policies import best_by_metric
from .retry import DEFAULT_RETRY, RetryPolicy
from .storage import Storage, resolve
from .untrusted import load_json

log = logging.getLogger(__name__)

PENDING_NAME = "_cloud_exporter_promoting.json"  # the lock and note of a flat promotion
PROMOTE_AGAIN = "promote again"


def select_export(
    base: str,
    *,
    version: int | None = None,
    best: tuple[str, str] | None = None,
    filesystem: Any = None,
    storage_options: dict[str, Any] | None = None,
    retry: RetryPolicy = DEFAULT_RETRY,
) -> ExportInfo:
    """The export to serve, verified: ``version``, else the best by ``best=(metric, "min"|"max")``
    among exports whose marker records that metric, else the latest."""
    opts = {"filesystem": filesystem, "storage_options": storage_options, "retry": retry}
    if version is not None and best is not None:
        raise InvalidArgumentError("pass version= or best=, not both")
    if version is None and best is not None:
        version = _best_version(base, best, opts)
    if version is None:
        latest = latest_export(base, **opts)
        if latest is None:
            raise InvalidArgumentError(f"no committed export under {base} to promote")
        version = latest.version
    return verify_export(base, version, **opts)


def _best_version(base: str, best: tuple[str, str], opts: dict[str, Any]) -> int:
    if not isinstance(best, (tuple, list)) or len(best) != 2 or best[1] not in ("min", "max"):
        raise InvalidArgumentError(f"best must be (metric, 'min'|'max'), got {best!r}")
    metric, mode = best
    ranked = best_by_metric(list_exports(base, **opts), metric, mode)
    if not ranked:
        raise InvalidArgumentError(f"no export under {base} records the metric {metric!r}")
    return ranked[0][1].version


def promote(
    base: str,
    serving_uri: str,
    *,
    version: int | None = None,
    best: tuple[str, str] | None = None,
    flat: bool = False,
    stale_seconds: float = 900.0,
    filesystem: Any = None,
    storage_options: dict[str, Any] | None = None,
    retry: RetryPolicy = DEFAULT_RETRY,
) -> ExportInfo:
    """Copy one committed export of ``base`` (see :func:`select_export`) to ``serving_uri``,
    server-side, in the same store: files first, ``saved_model.pb`` last, marker last.

    ``flat=False``: into ``<serving_uri>/<version>/``, a new version of the serving base (readers
    see it once its marker exists, like any publish). ``flat=True``: directly into
    ``serving_uri``, replacing what an earlier promotion put there; readers of the marker see the
    old export, then none (:func:`read_promoted` returns None), then the new one; one flat
    promotion at a time (a note younger than ``stale_seconds`` makes others fail with
    VersionConflictError). Returns the promoted export as read back from its new place.
    """
    source = select_export(
        base,
        version=version,
        best=best,
        filesystem=filesystem,
        storage_options=storage_options,
        retry=retry,
    )
    fs, src_root = resolve(base, filesystem, storage_options)
    storage = Storage(fs, retry)
    dst_root = storage.path_in_store(serving_uri, plain_is_ours=filesystem is not None)
    if dst_root is None:
        raise InvalidArgumentError(
            f"{serving_uri} is not in the same store as the export base ({storage.uri(src_root)}):"
            " promotion copies server-side; publish the model there instead"
        )
    if _nested(src_root, dst_root):
        raise InvalidArgumentError(f"{serving_uri} and {base} must not contain one another")
    marker = storage.read_bytes(marker_path(src_root, source.version), MAX_MARKER_BYTES)
    if marker is None:
        raise CorruptExportError(f"{source.uri} lost its marker while being promoted")
    src_dir = version_dir(src_root, source.version)
    if flat:
        _promote_flat(storage, src_dir, dst_root, source, marker, stale_seconds)
        info = read_promoted(serving_uri, filesystem=fs, retry=retry)
        if info is None:
            raise VersionConflictError(f"{serving_uri} is being replaced by another promotion")
        return info
    _promote_versioned(storage, src_dir, dst_root, source, marker)
    return verify_export(serving_uri, source.version, filesystem=fs, retry=retry)


def _nested(a: str, b: str) -> bool:
    return a == b or a.startswith(b + "/") or b.startswith(a + "/")


def _undo(storage: Storage, paths: list[str]) -> None:
    try:
        storage.delete(paths)
    except Exception as exc:  # the marker is absent: leftovers are invisible to readers
        log.warning("could not clean up after a failed promotion (%s)", exc)


def _promote_versioned(
    storage: Storage, src_dir: str, dst_root: str, info: ExportInfo, marker: bytes
) -> None:
    """Into ``<serving>/<version>/`` under a claim, committed by the (copied) marker."""
    target = version_dir(dst_root, info.version)
    existing = storage.read_bytes(marker_path(dst_root, info.version), MAX_MARKER_BYTES)
    if existing == marker:
        log.info("%s is already promoted", storage.uri(target))
        return
    if existing is not None:
        raise VersionConflictError(f"{storage.uri(target)} holds another export")
    claim = claim_path(dst_root, info.version)
    mine = f"promote-{os.getpid()}-{uuid.uuid4().hex}".encode()
    if not storage.create_exclusive(claim, mine, durable=False):
        raise VersionConflictError(
            f"{storage.uri(target)} is being published or promoted by another writer (or a "
            "crashed one: prune removes its leftovers after grace_seconds)"
        )
    placed: list[str] = []
    try:
        if storage.list_tree(target):
            raise VersionConflictError(f"{storage.uri(target)} already holds files")
        sizes = {f.path: f.size for f in info.files}  # checked by commit_marker below
        copy_into_place(storage, src_dir, target, list(sizes), placed, sizes, _crcs(info))
        commit_marker(storage, target, info.files, marker, fix=PROMOTE_AGAIN)
    except BaseException:
        _undo(storage, [*placed, claim])
        raise
    storage.delete_one(claim)
    log.info("promoted %s to %s", info.uri, storage.uri(target))


def _crcs(info: ExportInfo) -> dict[str, str]:
    """The manifest's CRC32C by path: each copy that reports another raises."""
    return {f.path: f.crc32c for f in info.files if f.crc32c}


def _take_note(storage: Storage, dst: str, info: ExportInfo, stale_seconds: float) -> bytes:
    """Create the promotion note, create-only: the lock of a flat location. A note older than
    ``stale_seconds`` (or unreadable) is a crashed promotion's and is taken over."""
    path = join(dst, PENDING_NAME)
    note = json.dumps(
        {
            "source": info.uri,
            "version": info.version,
            "started": time.time(),
            "id": uuid.uuid4().hex,
        }
    ).encode()
    for _ in range(2):
        if storage.create_exclusive(path, note):
            return note
        # A note that does not parse is not a live promotion's (notes are written whole).
        # Otherwise age it by the store's clock: its modification time against a probe's.
        try:
            valid = "started" in load_json(storage.read_bytes(path, 1 << 16) or b"", 1 << 16)
        except (ValueError, TypeError):
            valid = False
        started = storage.mtime_of(path) if valid else None
        if started is not None and storage.store_now(dst) - started < stale_seconds:
            raise VersionConflictError(
                f"{storage.uri(dst)} is being promoted into since {started:.0f} (Unix time, "
                f"store clock); wait, or delete {PENDING_NAME} there if that promotion died"
            )
        log.warning("taking over the stale promotion note in %s", storage.uri(dst))
        storage.delete_one(path)
    raise VersionConflictError(f"another promotion into {storage.uri(dst)} started meanwhile")


def _promote_flat(
    storage: Storage,
    src_dir: str,
    dst: str,
    info: ExportInfo,
    marker: bytes,
    stale_seconds: float,
) -> None:
    """Replace the contents of the flat location ``dst`` with the export (see ``promote``)."""
    listed = {e.relpath for e in storage.list_tree(dst)}
    ours = MARKER_NAME in listed or PENDING_NAME in listed
    if listed and not ours:
        raise InvalidArgumentError(
            f"{storage.uri(dst)} holds files that no promotion put there; promote into an empty "
            "location (a flat location belongs to cloud_exporter once promoted into)"
        )
    current = storage.read_bytes(join(dst, MARKER_NAME), MAX_MARKER_BYTES)
    if current == marker and PENDING_NAME not in listed:
        log.info("%s already serves %s", storage.uri(dst), info.uri)
        return
    note = _take_note(storage, dst, info, stale_seconds)
    storage.delete_one(join(dst, MARKER_NAME))  # from here on, readers see no export
    storage.delete([join(dst, name) for name in SAVED_MODEL_NAMES if name in listed])
    others, last = split_last([f.path for f in info.files], str)
    sizes, crcs = {f.path: f.size for f in info.files}, _crcs(info)  # checked as they land
    copy_files(storage, src_dir, dst, others, [], sizes=sizes, crcs=crcs)
    wanted = {f.path for f in info.files} | {PENDING_NAME}
    storage.delete(
        [join(dst, e.relpath) for e in storage.list_tree(dst) if e.relpath not in wanted]
    )
    copy_files(storage, src_dir, dst, last, [], sizes=sizes, crcs=crcs)

    def still_ours() -> None:
        if storage.read_bytes(join(dst, PENDING_NAME), len(note)) != note:
            raise VersionConflictError(f"another promotion into {storage.uri(dst)} took over")

    commit_marker(
        storage,
        dst,
        info.files,
        marker,
        ignore=(MARKER_NAME, PENDING_NAME),
        before_create=still_ours,
        fix=PROMOTE_AGAIN,
    )
    storage.delete_one(join(dst, PENDING_NAME))
    storage.remove_empty_dirs(dst)
    log.info("promoted %s to %s (flat)", info.uri, storage.uri(dst))


def read_promoted(
    serving_uri: str,
    *,
    deep: bool = False,
    filesystem: Any = None,
    storage_options: dict[str, Any] | None = None,
    retry: RetryPolicy = DEFAULT_RETRY,
) -> ExportInfo | None:
    """The export a flat location serves, checked against its listing (``deep``: and SHA-256s);
    None while there is none (never promoted, or being replaced). CorruptExportError if the
    files do not match the marker."""
    fs, root = resolve(serving_uri, filesystem, storage_options)
    storage = Storage(fs, retry)
    data = storage.read_bytes(join(root, MARKER_NAME), MAX_MARKER_BYTES)
    if data is None:
        return None
    try:
        version = load_json(data, MAX_MARKER_BYTES).get("version")
    except (ValueError, AttributeError):
        version = None
    if not isinstance(version, int):
        raise CorruptExportError(f"{storage.uri(root)}/{MARKER_NAME} names no version")
    info = parse_marker(data, version, storage.uri(root))
    check_contents(storage, root, info.files, "now", (MARKER_NAME, PENDING_NAME), PROMOTE_AGAIN)
    if deep:
        problems = checksum_problems(storage, root, info, download=False)[0]
        if problems:
            raise CorruptExportError(f"{storage.uri(root)}: {'; '.join(problems[:5])}")
    return info
