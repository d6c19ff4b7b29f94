"""The commit protocol: how the files of one version get into place and become visible.

Three strategies share one shape (``write`` the files, then the marker commits):

* ``StagedCopy`` (object stores, default): upload under ``<base>/.cloud-exporter-staging/``,
  copy server-side into ``<base>/<version>/`` with saved_model.pb last, write the marker.
* ``DirectWrite`` (object stores, ``mode="direct"``): upload straight into the version
  directory, saved_model.pb last, then the marker. One pass; only marker-aware readers are safe.
* ``LocalRename`` (local disk): build the whole version, marker included, in the staging
  directory and ``rename`` it into place: atomic for every reader.

The marker is created only if absent, after checking that the version directory holds exactly
the files it lists (``commit_marker``). An export exists iff its marker exists and parses. Each
strategy also owns its ``cleanup`` (after the commit) and ``abort`` (after a failure).
``promotion`` commits copies of an export with the same functions (``copy_into_place``,
``check_contents``, ``commit_marker``).
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol, TypeVar

from .errors import CorruptExportError, VersionConflictError
from .layout import (
    MARKER_NAME,
    claim_path,
    is_saved_model_file,
    join,
    marker_path,
    staging_dir,
    staging_root,
    version_dir,
)
from .marker import MAX_MARKER_BYTES, FileRecord, encode_marker, parse_marker
from .source import Digests, SourceFile, copy_file, hash_file
from .storage import Storage

log = logging.getLogger(__name__)
T = TypeVar("T")
PUBLISH_AGAIN = "publish again with a new version"


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
    read_ahead: dict[str, tuple[bytes, Digests]] = field(default_factory=dict, repr=False)
    cleaned: bool = False  # the strategy's cleanup has run
    uploaded: bool = False  # StagedCopy.stage ran (while the claim was decided)
    cancelled: bool = False  # the claim was lost while staging: start no more transfers
    _marker: bytes | None = field(default=None, repr=False)

    @property
    def target(self) -> str:
        return version_dir(self.base, self.version)

    @property
    def staging(self) -> str:
        return staging_dir(self.base, self.version, self.writer_id)

    def manifest(self) -> list[FileRecord]:
        return [self.records[f.relpath] for f in self.files]

    def marker_bytes(self) -> bytes:
        """The marker, encoded once: first asked for at the commit, when every file is placed
        and its record final (before that, ``manifest`` raises KeyError)."""
        if self._marker is None:
            self._marker = encode_marker(
                self.version,
                self.created,
                self.manifest(),
                self.metadata,
                self.writer_id,
                self.library_version,
            )
        return self._marker


class CommitStrategy(Protocol):
    """Puts a version's files in place and commits it with the marker."""

    name: str

    def commit(self, plan: Plan) -> None: ...

    def cleanup(self, plan: Plan) -> None: ...

    def abort(self, plan: Plan, keep_staged: bool = False) -> None: ...


def split_last(items: Sequence[T], path: Callable[[T], str]) -> tuple[list[T], list[T]]:
    """(every other item, the saved_model.pb/.pbtxt items that must land last)."""
    last = [item for item in items if is_saved_model_file(path(item))]
    return [item for item in items if not is_saved_model_file(path(item))], last


LOCAL_BATCH_BELOW = 1 << 20  # local files smaller than this are copied in batches ...
LOCAL_BATCH_FILES = 32  # ... of this many files per task
LOCAL_INLINE_BELOW = 4 << 20  # a local tree smaller than this is copied on the calling thread


def transfer_hashed(
    plan: Plan, files: list[SourceFile], transfer: Callable[[SourceFile], Digests]
) -> None:
    """Transfer files concurrently, largest first; ``transfer`` hashes the bytes it moves (one
    read per file). ``plan.on_file`` hears each file's size once its transfer is complete."""

    def one(f: SourceFile) -> None:
        if plan.cancelled:  # the claim was lost meanwhile (publishing.StageWhileDeciding)
            return
        digests = transfer(f)
        plan.records[f.relpath] = FileRecord(f.relpath, f.size, digests.sha256, digests.crc32c)
        if plan.resume is not None:
            plan.resume.step(plan, f)
        if plan.on_file is not None:
            plan.on_file(f.size)

    ordered = sorted(files, key=lambda f: -f.size)
    if not plan.storage.is_local:
        plan.storage.run_parallel(one, ordered)
        return
    # Local disk: a task per small file costs more than its copy; small files go in batches,
    # and a small tree (an estimator's export) in one: threads cost more than they save there.
    if sum(f.size for f in files) < LOCAL_INLINE_BELOW:
        for f in ordered:
            one(f)
        return
    large = [[f] for f in ordered if f.size >= LOCAL_BATCH_BELOW]
    small = [f for f in ordered if f.size < LOCAL_BATCH_BELOW]
    batches = [small[i : i + LOCAL_BATCH_FILES] for i in range(0, len(small), LOCAL_BATCH_FILES)]
    plan.storage.run_parallel(lambda group: [one(f) for f in group], large + batches)


def upload_hashed(plan: Plan, prefix: str, files: list[SourceFile], record: list[str]) -> None:
    """Upload files below ``prefix`` (recorded in ``record``), each declaring its CRC32C."""
    record.extend(join(prefix, f.relpath) for f in files)
    sha256 = plan.checksum == "sha256"

    def upload(f: SourceFile) -> Digests:
        read = plan.read_ahead.pop(f.relpath, None)  # read while the version was claimed
        return plan.storage.upload_hashed(f.local_path, join(prefix, f.relpath), sha256, read)

    transfer_hashed(plan, files, upload)


Copier = Callable[[Sequence[tuple[str, str]]], None]


def copy_files(
    storage: Storage,
    src_dir: str,
    dst_dir: str,
    relpaths: Sequence[str],
    placed: list[str],
    copy: Copier | None = None,
    sizes: Mapping[str, int] | None = None,
    crcs: Mapping[str, str] | None = None,
) -> None:
    """Server-side copy of ``relpaths`` from ``src_dir`` to ``dst_dir`` (recorded in ``placed``)
    by ``copy`` (default ``storage.copy``, told the ``sizes`` and the expected CRC32C ``crcs``
    by relative path where known: a copy that lands other bytes raises)."""
    pairs = [(join(src_dir, p), join(dst_dir, p)) for p in relpaths]
    if storage.is_local:  # local copies do not create parent directories
        for _, dst in pairs:
            os.makedirs(os.path.dirname(dst), exist_ok=True)
    placed.extend(dst for _, dst in pairs)
    if copy is not None:
        copy(pairs)
        return

    def by_source(known: Mapping[str, Any] | None) -> dict[str, Any]:
        known = known or {}
        return {src: known[p] for p, (src, _) in zip(relpaths, pairs, strict=True) if known.get(p)}

    storage.copy(pairs, by_source(sizes), by_source(crcs))


def copy_into_place(
    storage: Storage,
    src_dir: str,
    dst_dir: str,
    relpaths: Sequence[str],
    placed: list[str],
    sizes: Mapping[str, int] | None = None,
    crcs: Mapping[str, str] | None = None,
) -> None:
    """Copy every other file first, then saved_model.pb: a loader that polls for it finds the
    rest already there."""
    for group in split_last(relpaths, str):
        copy_files(storage, src_dir, dst_dir, group, placed, sizes=sizes, crcs=crcs)


def check_contents(
    storage: Storage,
    directory: str,
    manifest: Sequence[FileRecord],
    when: str,
    ignore: Collection[str] = (MARKER_NAME,),
    fix: str = PUBLISH_AGAIN,
) -> None:
    """CorruptExportError unless ``directory`` holds exactly the manifest's files (names in
    ``ignore`` aside), with their sizes and, where the listing carries it (GCS), their CRC32C.
    Files a lagging listing does not show yet (or with an old size) are asked for by HEAD."""
    entries = [e for e in storage.list_tree(directory) if e.relpath not in ignore]
    listed = {e.relpath: e.size for e in entries}
    expected = {r.path: r.size for r in manifest}
    crcs = {r.path: r.crc32c for r in manifest if r.crc32c}
    bad_crc = sorted(
        e.relpath for e in entries if e.crc32c and crcs.get(e.relpath, e.crc32c) != e.crc32c
    )
    if bad_crc:
        raise CorruptExportError(
            f"{storage.uri(directory)} holds objects whose stored CRC32C differs from the "
            f"manifest {when} ({bad_crc[:5]}); nothing was committed: {fix}"
        )
    for path, size in expected.items():  # a lagging listing may not show fresh objects yet
        if listed.get(path) != size:
            listed[path] = storage.size_of(join(directory, path))
    listed = {p: s for p, s in listed.items() if s is not None}
    if listed != expected:
        extra = sorted(set(listed) - set(expected))[:5]
        wrong = sorted(p for p in expected if listed.get(p) != expected[p])[:5]
        raise CorruptExportError(
            f"{storage.uri(directory)} does not match the manifest {when} (unexpected "
            f"{extra}, missing or wrong size {wrong}); nothing was committed: {fix}"
        )


def create_marker(storage: Storage, path: str, data: bytes, fix: str = PUBLISH_AGAIN) -> None:
    """Create the marker only if absent; VersionConflictError if another writer's is there
    (a retried create whose answer was lost reads back as ours, and counts as done)."""
    if not storage.create_exclusive(path, data) and storage.read_bytes(path, len(data)) != data:
        raise VersionConflictError(f"{storage.uri(path)} was committed by another writer; {fix}")


def commit_marker(
    storage: Storage,
    directory: str,
    manifest: Sequence[FileRecord],
    data: bytes,
    *,
    ignore: Collection[str] = (MARKER_NAME,),
    before_create: Callable[[], None] | None = None,
    alongside: Callable[[], None] | None = None,
    checked: bool = False,
    fix: str = PUBLISH_AGAIN,
) -> None:
    """The commit: check ``directory`` against the manifest, create its marker if absent,
    then check again. Whatever removed files in the window between the first check and the
    marker (a pruner that judged them orphans) is caught, and the marker withdrawn.
    ``before_create`` runs between the check and the create (a last ownership test);
    ``alongside`` runs at the same time as the second check (work that needs the marker to
    exist but not the check to pass: a publish's cleanup). ``checked``: the caller has just
    made the first check (``write_marker``)."""
    path = join(directory, MARKER_NAME)
    if not checked:
        check_contents(storage, directory, manifest, "before commit", ignore, fix)
    if before_create is not None:
        before_create()
    create_marker(storage, path, data, fix)

    def check_again() -> None:
        check_contents(storage, directory, manifest, "after commit", ignore, fix)

    try:
        storage.together(check_again, *([alongside] if alongside else []))
    except CorruptExportError:
        storage.delete_one(path)
        raise


def write_marker(
    plan: Plan,
    cleanup: Callable[[Plan], None],
    last: Sequence[SourceFile],
    land: Callable[[], None],
) -> None:
    """Put saved_model.pb in place and commit (see ``commit_marker``), two round trips fewer:

    * ``land`` writes the ``last`` files (saved_model.pb) while the first check lists the
      others. saved_model.pb is proven by its own write, just made (an upload the store
      checked against its CRC32C, or a copy), and the check after the marker covers it too.
    * ``cleanup`` runs beside the check after the commit."""
    storage, names = plan.storage, {f.relpath for f in last}
    others = [plan.records[f.relpath] for f in plan.files if f.relpath not in names]

    def check_others() -> None:
        check_contents(storage, plan.target, others, "before commit", {MARKER_NAME, *names})

    storage.together(check_others, land)
    commit_marker(
        storage,
        plan.target,
        plan.manifest(),
        plan.marker_bytes(),
        alongside=lambda: cleanup(plan),
        checked=True,
    )


class _Strategy:
    """Cleanup and abort, from what the strategy recorded in the plan."""

    name = ""

    def cleanup(self, plan: Plan) -> None:
        """After the commit: remove the staging copies and the claim (litter, never harm).
        Once per publish (it may already have run beside the check after the commit)."""
        if plan.cleaned:
            return
        plan.cleaned = True
        try:
            plan.storage.delete([*plan.staged, claim_path(plan.base, plan.version)])
            plan.storage.remove_dir_if_empty(staging_root(plan.base))  # local disk: no litter
        except Exception as exc:  # the export is committed; prune removes leftovers later
            log.warning(
                "committed, but cleanup of staging failed (%s); prune removes it later", exc
            )

    def abort(self, plan: Plan, keep_staged: bool = False) -> None:
        """Best effort after a failure: remove what this publish wrote unless it committed
        (with ``keep_staged``, the staging uploads and their records stay for a resume)."""
        storage = plan.storage
        try:
            committer = marker_writer(plan)
            if committer == plan.writer_id:
                log.warning("publish failed after its marker landed: %s is committed", plan.target)
                return
            if committer is not None:
                # Another writer committed the version this publish held a claim on: the store
                # did not keep the claim exclusive. Deleting what we placed would empty their
                # export; what stays is theirs or bytes we wrote over theirs (verify tells).
                log.error(
                    "%s was committed by another writer while this publish held its claim: the "
                    "store did not keep create-only writes exclusive (it must honour "
                    "If-None-Match / ifGenerationMatch=0); the version directory is left as it "
                    "is: run 'cloud-exporter verify --deep' on it",
                    storage.uri(plan.target),
                )
                storage.delete([] if keep_staged else plan.staged)
                return
            self._remove_build(plan)
            storage.delete([*plan.placed, *([] if keep_staged else plan.staged)])
            storage.delete_one(claim_path(plan.base, plan.version))  # last: marks them as ours
            storage.remove_dir_if_empty(staging_root(plan.base))  # local disk: no litter
        except BaseException as exc:
            log.warning(
                "could not clean up after a failed publish (%s); prune removes it later", exc
            )

    def _remove_build(self, plan: Plan) -> None:
        pass


class StagedCopy(_Strategy):
    """Upload to staging, copy server-side into place (saved_model.pb last), then commit.

    The copies start once every upload is done: the version directory exists only for the
    copy phase (no client bytes), which keeps short the time TF Serving can see it without
    saved_model.pb (docs/guarantees.md)."""

    name = "staged"

    def stage(self, plan: Plan) -> None:
        """Upload every file an interrupted publish did not leave proven, to this plan's
        staging. Touches nothing outside it: it may run while the claim is still decided."""
        fresh = plan.files if plan.resume is None else plan.resume.reuse(plan)
        upload_hashed(plan, plan.staging, fresh, plan.staged)
        plan.uploaded = True

    def commit(self, plan: Plan) -> None:
        if not plan.uploaded:
            self.stage(plan)
        # The sizes are known: no listing or HEAD before the copies. A resume copies reused
        # objects from the staging they were proven in (resume.py).
        sizes = {f.relpath: f.size for f in plan.files}
        crcs = {p: r.crc32c for p, r in plan.records.items() if r.crc32c}  # what was uploaded
        copy = None if plan.resume is None else partial(plan.resume.place, plan)
        others, last = split_last(sorted(plan.files, key=lambda f: -f.size), lambda f: f.relpath)

        def place(files: list[SourceFile]) -> None:
            relpaths = [f.relpath for f in files]
            copy_files(
                plan.storage, plan.staging, plan.target, relpaths, plan.placed, copy, sizes, crcs
            )

        place(others)
        write_marker(plan, self.cleanup, last, lambda: place(last))


class DirectWrite(_Strategy):
    """Upload straight into the version directory (saved_model.pb last), then commit."""

    name = "direct"

    def commit(self, plan: Plan) -> None:
        others, last = split_last(plan.files, lambda f: f.relpath)
        upload_hashed(plan, plan.target, others, plan.placed)
        write_marker(
            plan, self.cleanup, last, lambda: upload_hashed(plan, plan.target, last, plan.placed)
        )


class LocalRename(_Strategy):
    """Build the complete version beside its final place, marker included, then rename it."""

    name = "local-rename"

    def commit(self, plan: Plan) -> None:
        build = plan.staging
        for parent in sorted({os.path.dirname(os.path.join(build, f.relpath)) for f in plan.files}):
            os.makedirs(parent, exist_ok=True)
        sha256 = plan.checksum == "sha256"
        transfer_hashed(
            plan, plan.files, lambda f: copy_file(f, os.path.join(build, f.relpath), sha256)
        )
        self._seal(plan, build)

    def _seal(self, plan: Plan, build: str) -> None:
        """Write the marker into the complete build directory, then rename it into place."""
        with open(os.path.join(build, MARKER_NAME), "xb") as out:
            out.write(plan.marker_bytes())
        try:
            os.rename(build, plan.target)
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
                raise VersionConflictError(
                    f"{plan.target} already exists; publish again with a new version"
                ) from exc
            raise

    def _remove_build(self, plan: Plan) -> None:
        plan.storage.remove_local_tree(plan.staging)  # the unrenamed build directory


class WrittenInPlace(LocalRename):
    """Local disk, files already written into the staging directory (the estimator's export):
    hash them where they lie, then commit as LocalRename does. No copy is made."""

    name = "written-in-place"

    def __init__(self, export_dir: str) -> None:
        self.export_dir = export_dir

    def commit(self, plan: Plan) -> None:
        sha256 = plan.checksum == "sha256"
        transfer_hashed(plan, plan.files, lambda f: hash_file(f.local_path, sha256))
        self._seal(plan, self.export_dir)


def choose_strategy(storage: Storage, mode: str) -> CommitStrategy:
    if storage.is_local:
        return LocalRename()
    return StagedCopy() if mode == "staged" else DirectWrite()


def marker_writer(plan: Plan) -> str | None:
    """After a failure: the writer id in a valid marker at the plan's version (ours when our
    marker landed but its answer was lost), None when there is none. Errors count as unknown."""
    data = plan.storage.read_bytes(marker_path(plan.base, plan.version), MAX_MARKER_BYTES)
    if data is None:
        return None
    try:
        return parse_marker(data, plan.version, plan.storage.uri(plan.target)).writer_id
    except CorruptExportError:
        return None
