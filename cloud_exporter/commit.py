"""The commit protocol: how the files of one version get into place and become visible.

Three strategies share one shape (``write`` the files, then the marker commits):

* ``StagedCopy`` (object stores, default): upload under ``<base>/.cloud-exporter-staging/``,
  copy server-side into ``<base>/<version>/`` with saved_model.pb last, write the marker.
* ``DirectWrite`` (object stores, ``mode="direct"``): upload straight into the version
  directory, saved_model.pb last, then the marker. One pass; only marker-aware readers are safe.
* ``LocalRename`` (local disk): build the whole version, marker included, in the staging
  directory and ``rename`` it into place: atomic for every reader.

The marker is created only if absent, after checking that the version directory holds exactly
the files it lists. An export exists iff its marker exists and parses.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

from .errors import CorruptExportError, VersionConflictError
from .layout import MARKER_NAME, is_saved_model_file, join, marker_path, staging_dir, version_dir
from .marker import FileRecord, encode_marker, parse_marker
from .source import Digests, SourceFile, copy_file
from .storage import Storage

log = logging.getLogger(__name__)


@dataclass
class Plan:
    """Everything one publish needs; strategies fill ``records``, ``staged`` and ``placed``."""

    storage: Storage
    base: str
    version: int
    files: list[SourceFile]
    writer_id: str
    metadata: dict
    created: float
    library_version: str
    on_file: Callable[[int], None] | None = None
    checksum: str = "crc32c"  # "sha256": SHA-256 as well (CRC32C is always recorded)
    records: dict[str, FileRecord] = field(default_factory=dict)
    staged: list[str] = field(default_factory=list)  # paths written under the staging prefix
    placed: list[str] = field(default_factory=list)  # paths written into the version directory
    resume: Any = None  # a resume.Session (staged mode): reuses proven uploads, records new ones

    @property
    def target(self) -> str:
        return version_dir(self.base, self.version)

    @property
    def staging(self) -> str:
        return staging_dir(self.base, self.version, self.writer_id)

    def manifest(self) -> list[FileRecord]:
        return [self.records[f.relpath] for f in self.files]

    def marker_bytes(self) -> bytes:
        return encode_marker(
            self.version,
            self.created,
            self.manifest(),
            self.metadata,
            self.writer_id,
            self.library_version,
        )


class CommitStrategy(Protocol):
    """Puts a version's files in place and commits it with the marker."""

    name: str

    def commit(self, plan: Plan) -> None: ...


def split_last(files: list[SourceFile]) -> tuple[list[SourceFile], list[SourceFile]]:
    """(every other file, the saved_model.pb/.pbtxt files that must land last)."""
    last = [f for f in files if is_saved_model_file(f.relpath)]
    return [f for f in files if not is_saved_model_file(f.relpath)], last


def transfer_hashed(
    plan: Plan, files: list[SourceFile], transfer: Callable[[SourceFile], Digests]
) -> None:
    """Transfer files concurrently, largest first; ``transfer`` hashes the bytes it moves (one
    read per file). ``plan.on_file`` hears each file's size once its transfer is complete."""

    def one(f: SourceFile) -> None:
        digests = transfer(f)
        plan.records[f.relpath] = FileRecord(f.relpath, f.size, digests.sha256, digests.crc32c)
        if plan.resume is not None:
            plan.resume.step(plan, f)
        if plan.on_file is not None:
            plan.on_file(f.size)

    plan.storage.run_parallel(one, sorted(files, key=lambda f: -f.size))


def upload_hashed(plan: Plan, prefix: str, files: list[SourceFile], record: list[str]) -> None:
    """Upload files below ``prefix`` (recorded in ``record``), each declaring its CRC32C."""
    record.extend(join(prefix, f.relpath) for f in files)
    sha256 = plan.checksum == "sha256"

    def upload(f: SourceFile) -> Digests:
        return plan.storage.upload_hashed(f.local_path, join(prefix, f.relpath), sha256)

    transfer_hashed(plan, files, upload)


def write_marker(plan: Plan) -> None:
    """Check the version directory against the manifest, create the marker if absent, then
    check again: whatever removed files in the window between the first check and the marker
    (a pruner that judged them orphans) is caught, and the marker withdrawn."""
    storage = plan.storage
    _check_in_place(plan, "before commit")
    path = marker_path(plan.base, plan.version)
    data = plan.marker_bytes()
    # Not created and not ours (a retried create whose answer was lost reads back as ours).
    if not storage.create_exclusive(path, data) and storage.read_bytes(path, len(data)) != data:
        raise VersionConflictError(
            f"{storage.uri(path)} was committed by another writer; publish again with a new version"
        )
    try:
        _check_in_place(plan, "after commit")
    except CorruptExportError:
        storage.delete_one(path)
        raise


def _check_in_place(plan: Plan, when: str) -> None:
    """CorruptExportError unless the version directory holds exactly the manifest's files."""
    storage = plan.storage
    entries = [e for e in storage.list_tree(plan.target) if e.relpath != MARKER_NAME]
    listed = {e.relpath: e.size for e in entries}
    expected = {r.path: r.size for r in plan.manifest()}
    # Where the listing carries the store's CRC32C (GCS), compare it too: no extra request.
    crcs = {r.path: r.crc32c for r in plan.manifest()}
    bad_crc = sorted(
        e.relpath for e in entries if e.crc32c and crcs.get(e.relpath, e.crc32c) != e.crc32c
    )
    if bad_crc:
        raise CorruptExportError(
            f"{storage.uri(plan.target)} holds objects whose stored CRC32C differs from the "
            f"bytes uploaded ({bad_crc[:5]}); nothing was committed: publish again"
        )
    for path, size in expected.items():  # a lagging listing may not show fresh objects yet
        if listed.get(path) != size:
            listed[path] = storage.size_of(join(plan.target, path))
    listed = {p: s for p, s in listed.items() if s is not None}
    if listed != expected:
        extra = sorted(set(listed) - set(expected))[:5]
        wrong = sorted(p for p in expected if listed.get(p) != expected[p])[:5]
        raise CorruptExportError(
            f"{storage.uri(plan.target)} does not match the manifest {when} (unexpected "
            f"{extra}, missing or wrong size {wrong}); nothing was committed: publish again "
            "with a new version"
        )


class StagedCopy:
    """Upload to staging, copy server-side into place (saved_model.pb last), then commit."""

    name = "staged"

    def commit(self, plan: Plan) -> None:
        fresh = plan.files if plan.resume is None else plan.resume.reuse(plan)
        upload_hashed(plan, plan.staging, fresh, plan.staged)
        # One listing instead of a HEAD per copy: s3fs takes each source's size from it.
        plan.storage.list_tree(plan.staging)
        others, last = split_last(plan.files)
        # A resume copies reused objects from the staging they were proven in (resume.py).
        copy = plan.storage.copy if plan.resume is None else partial(plan.resume.place, plan)
        for group in (others, last):
            group = sorted(group, key=lambda f: -f.size)
            pairs = [(join(plan.staging, f.relpath), join(plan.target, f.relpath)) for f in group]
            plan.placed.extend(dst for _, dst in pairs)
            copy(pairs)
        write_marker(plan)


class DirectWrite:
    """Upload straight into the version directory (saved_model.pb last), then commit."""

    name = "direct"

    def commit(self, plan: Plan) -> None:
        others, last = split_last(plan.files)
        upload_hashed(plan, plan.target, others, plan.placed)
        upload_hashed(plan, plan.target, last, plan.placed)
        write_marker(plan)


class LocalRename:
    """Build the complete version beside its final place, marker included, then rename it."""

    name = "local-rename"

    def commit(self, plan: Plan) -> None:
        build = plan.staging
        for f in plan.files:
            os.makedirs(os.path.dirname(os.path.join(build, f.relpath)), exist_ok=True)
        sha256 = plan.checksum == "sha256"
        transfer_hashed(
            plan, plan.files, lambda f: copy_file(f, os.path.join(build, f.relpath), sha256)
        )
        with open(os.path.join(build, MARKER_NAME), "wb") as out:
            out.write(plan.marker_bytes())
        try:
            os.rename(build, plan.target)
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
                raise VersionConflictError(
                    f"{plan.target} already exists; publish again with a new version"
                ) from exc
            raise


def choose_strategy(storage: Storage, mode: str) -> CommitStrategy:
    if storage.is_local:
        return LocalRename()
    return StagedCopy() if mode == "staged" else DirectWrite()


def our_marker_committed(plan: Plan) -> bool:
    """After a failure: did our marker land anyway (its answer lost)? Errors count as unknown."""
    data = plan.storage.read_bytes(marker_path(plan.base, plan.version), 1 << 24)
    if data is None:
        return False
    try:
        info = parse_marker(data, plan.version, plan.storage.uri(plan.target))
    except CorruptExportError:
        return False
    return info.writer_id == plan.writer_id
