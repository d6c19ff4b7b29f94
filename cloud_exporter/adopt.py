"""``adopt_exports``: commit version directories that have no marker (stock tf.estimator exports,
copies made by other tools), so that list/latest/verify/prune treat them like any export.

Each candidate must be a complete SavedModel (see ``_unmarked.incomplete_reason``), must not be
named by a publish or prune of ours in flight (a claim, staging upload or prune journal), and
must not change while it is hashed. Its marker is written with a create-only write, so running
adopt twice, or in two processes at once, adopts each directory once.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from ._unmarked import STOCK_NAME, incomplete_reason, unmarked_versions
from ._version import __version__
from .errors import CorruptExportError, InvalidArgumentError
from .exports import list_base, read_export
from .layout import join, marker_path, version_dir
from .marker import ExportInfo, FileRecord, encode_marker, parse_marker
from .retention import busy_versions
from .retry import DEFAULT_RETRY, RetryPolicy
from .source import Digests
from .storage import Entry, Storage, resolve

__all__ = ["AdoptReport", "adopt", "adopt_exports"]

log = logging.getLogger(__name__)


@dataclass
class AdoptReport:
    """What ``adopt`` committed (or would, with ``dry_run``), refused (with why), or found
    already committed by someone else meanwhile."""

    base: str
    dry_run: bool = False
    adopted: list[ExportInfo] = field(default_factory=list)
    refused: dict[int, str] = field(default_factory=dict)
    already: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "base": self.base,
            "dry_run": self.dry_run,
            "adopted": [info.to_dict() for info in self.adopted],
            "refused": {str(v): why for v, why in sorted(self.refused.items())},
            "already": self.already,
        }


def adopt_exports(
    base: str,
    *,
    dry_run: bool = False,
    filesystem: Any = None,
    storage_options: dict[str, Any] | None = None,
    retry: RetryPolicy = DEFAULT_RETRY,
) -> list[ExportInfo]:
    """Write a marker for each complete unmarked version directory under ``base``; returns the
    adopted exports (with ``dry_run``: those that would be, unhashed). Refusals are logged."""
    report = adopt(
        base,
        dry_run=dry_run,
        filesystem=filesystem,
        storage_options=storage_options,
        retry=retry,
    )
    return report.adopted


def adopt(
    base: str,
    *,
    dry_run: bool = False,
    filesystem: Any = None,
    storage_options: dict[str, Any] | None = None,
    retry: RetryPolicy = DEFAULT_RETRY,
) -> AdoptReport:
    """As :func:`adopt_exports`, returning the full report (refusals with their reasons)."""
    if filesystem is None:  # an instance of our own: our listings must not fill the listing
        # cache of a shared instance that a publish in this process reads sizes from
        storage_options = {**(storage_options or {}), "skip_instance_cache": True}
    fs, root = resolve(base, filesystem, storage_options)
    storage = Storage(fs, retry)
    report = AdoptReport(storage.uri(root), dry_run)
    listing = list_base(storage, root)
    busy = busy_versions(storage, root, listing)
    for version, files in sorted(unmarked_versions(listing).items()):
        reason = _refusal(version, files, busy)
        if reason is not None:
            report.refused[version] = reason
            log.warning("not adopting %s: %s", storage.uri(version_dir(root, version)), reason)
            continue
        if dry_run:
            records = [_record(p, e.size, None) for p, e in sorted(files.items())]
            report.adopted.append(_info(storage, root, version, records, _metadata(version)))
            continue
        _adopt_one(storage, root, version, files, report)
    return report


def _refusal(version: int, files: dict[str, Entry], busy: set[int]) -> str | None:
    if version in busy:
        return "a cloud_exporter publish or prune of this version is in flight (or crashed)"
    return incomplete_reason(files)


def _adopt_one(
    storage: Storage, root: str, version: int, files: dict[str, Entry], report: AdoptReport
) -> None:
    directory = version_dir(root, version)
    records: dict[str, FileRecord] = {}

    def digest(relpath: str) -> None:
        records[relpath] = _record(
            relpath, files[relpath].size, _digests(storage, directory, relpath)
        )

    storage.run_parallel(digest, sorted(files))
    now = {e.relpath: e.size for e in storage.list_tree(directory)}
    if now != {p: e.size for p, e in files.items()}:
        report.refused[version] = "its files changed while they were hashed (still being copied?)"
        return
    ordered = [records[p] for p in sorted(records)]
    writer_id = f"adopt-{os.getpid()}-{uuid.uuid4().hex[:12]}"
    try:
        data = encode_marker(
            version, time.time(), ordered, _metadata(version), writer_id, __version__
        )
        info = parse_marker(data, version, storage.uri(directory))
    except (CorruptExportError, InvalidArgumentError) as exc:
        report.refused[version] = f"cannot be described by a marker ({exc})"
        return
    if storage.create_exclusive(marker_path(root, version), data):
        log.info("adopted %s (%d files)", info.uri, len(info.files))
        report.adopted.append(info)
        return
    try:  # someone committed it first (another adopt, or a publish of that number)
        read_export(storage, root, version)
    except CorruptExportError as exc:
        report.refused[version] = f"another writer's marker appeared and is invalid ({exc})"
        return
    report.already.append(version)


def _record(path: str, size: int, digests: Digests | None) -> FileRecord:
    """The one place adopt builds a FileRecord (CRC32C, and SHA-256 too: the bytes are read
    anyway); a dry run has no checksums."""
    if digests is None:
        return FileRecord(path, size)
    return FileRecord(path, size, digests.sha256, digests.crc32c)


def _digests(storage: Storage, directory: str, relpath: str) -> Digests:
    return storage.read_digests(join(directory, relpath), sha256=True)


def _metadata(version: int) -> dict[str, Any]:
    kind = "stock-estimator" if STOCK_NAME.match(str(version)) else "unmarked"
    adopted = {"at": datetime.now(timezone.utc).isoformat(), "by": "adopt", "kind": kind}
    return {"adopted": adopted}


def _info(
    storage: Storage, root: str, version: int, records: list[FileRecord], meta: dict[str, Any]
) -> ExportInfo:
    return ExportInfo(
        version, storage.uri(version_dir(root, version)), time.time(), tuple(records), meta
    )
