"""Local disk: commit a SavedModel that TensorFlow writes inside the base, by one rename.

For a base on local disk the adapters need no second copy of the export. The version is
claimed first; TensorFlow then writes into that version's staging directory
(``<base>/.cloud-exporter-staging/<version>-<writer>/``, on the base's file system and invisible
to TF Serving); its files are hashed where they lie, the marker is written into the export
directory last, and the directory is renamed to ``<base>/<version>``. Readers see nothing, then
the complete version with its marker (as :class:`cloud_exporter.commit.LocalRename`). A crash
leaves a claim and a staging directory that ``prune`` removes after ``grace_seconds``.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from ._version import __version__
from .commit import Plan, WrittenInPlace
from .layout import ASSETS_EXTRA_DIRNAME
from .marker import ExportInfo, parse_marker
from .publishing import claim_version
from .retry import RetryPolicy
from .source import scan_source
from .storage import Storage, resolve

log = logging.getLogger(__name__)

#: ``write(directory)`` -> (export dir inside it, what the exporter returned, assets_extra)
Writer = Callable[[str], tuple[str, Any, Mapping[str, str] | None]]


def local_storage(
    base: str, filesystem: Any, storage_options: dict[str, Any] | None, retry: RetryPolicy
) -> tuple[Storage, str] | None:
    """(storage, root) when ``base`` is on local disk, else None (publish uploads instead)."""
    fs, root = resolve(base, filesystem, storage_options)
    storage = Storage(fs, retry)
    return (storage, root) if storage.is_local else None


def publish_written(
    storage: Storage,
    root: str,
    write: Writer,
    metadata: dict[str, Any],
    checksum: str = "crc32c",
) -> tuple[ExportInfo, Any]:
    """Claim a version, let ``write`` put the SavedModel in its staging directory, commit it by
    renaming; returns (the committed export, what ``write`` returned second)."""
    writer_id = f"w{os.getpid()}-{uuid.uuid4().hex[:12]}"
    existed = os.path.isdir(root)
    version = claim_version(storage, root, None, writer_id)
    plan = Plan(storage, root, version, [], writer_id, metadata, time.time(), __version__)
    plan.checksum = checksum
    strategy: WrittenInPlace | None = None
    try:
        os.makedirs(plan.staging, exist_ok=True)
        export_dir, written, assets = write(plan.staging)
        plan.files = _with_assets(export_dir, assets)
        strategy = WrittenInPlace(export_dir)
        strategy.commit(plan)
    except BaseException:
        (strategy or WrittenInPlace(plan.staging)).abort(plan)
        if not existed:  # a failed first export leaves no empty base behind
            storage.remove_dir_if_empty(root)
        raise
    shutil.rmtree(plan.staging, ignore_errors=True)  # fetched assets, TF's leftovers
    strategy.cleanup(plan)
    info = parse_marker(plan.marker_bytes(), version, storage.uri(plan.target))
    log.info(
        "committed %s in place (%d files, %d bytes)", info.uri, len(info.files), info.total_size
    )
    return info, written


def _with_assets(export_dir: str, assets: Mapping[str, str] | None) -> list[Any]:
    """Validate the export and ``assets_extra`` (nothing written on error), then copy each extra
    into ``assets.extra/`` of the export (it is published from there, as stock exports hold it)."""
    if not assets:
        return scan_source(export_dir)
    scan_source(export_dir, assets)
    for dest, src in assets.items():
        target = os.path.join(export_dir, ASSETS_EXTRA_DIRNAME, *dest.split("/"))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copyfile(src, target)
    return scan_source(export_dir)
