"""Resume an interrupted staged publish: reuse what a dead publisher proved it uploaded.

A staged object proves its own content where the store keeps the CRC32C it checked on upload
(S3: every upload of ours declares it, read back by HeadObject with ChecksumMode; GCS: in
every listing). Where it does not (other stores), or where SHA-256 is recorded as well, the
publisher writes a small record beside each object once its upload is done,
``<staging>/.cloud-exporter-uploaded/<sha256(relpath)>.json``, holding the relative path, size,
CRC32C (and SHA-256). A record is written only after the upload completed, by the one writer
that owns that staging directory, which never writes that path again. A record that is there
but broken disowns its object.

The next publish to the same base (any process, any host) lists the staging area once, reads
the records and the stored checksums of the objects no record names (:class:`Leftovers`); then
it hashes, in parallel, the local files that an object could match (same relative path and
size) and reuses an object only when the checksums match (``Session.reuse``). A reused object
is copied server-side straight from the dead publisher's staging into the new version
directory, in the copy phase every staged publish has (``Session.place``): no bytes through the
client and no extra copy. Nobody ever writes into, adopts or deletes another writer's staging
area, so whether its owner is dead or alive (or on a clock hours off) does not matter; a copy
whose source has gone in the meantime (its owner finished, a prune removed it) falls back to an
upload. Two resumers of the same leftovers each build a complete version of their own. What is
never resumed is removed by prune's orphan rules or the bucket lifecycle rule, like any
leftover staging.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import logging
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from . import storage_checksums
from .errors import ChecksumMismatchError, LocationNotFoundError, StorageError
from .layout import join, staging_root
from .marker import FileRecord
from .source import Digests, SourceFile, check_relative_path, hash_file
from .storage import Entry, Storage
from .untrusted import load_json

log = logging.getLogger(__name__)

RECORDS_DIRNAME = ".cloud-exporter-uploaded"
_FORMAT = 1
_RECORD_LIMIT = 1 << 16
BARE_PER_FILE = 3  # staged objects without a record asked about per file (S3: one HEAD each)
_collectors: contextvars.ContextVar[list[Session] | None] = contextvars.ContextVar(
    "cloud_exporter_resume_sessions", default=None
)


def record_path(staging: str, relpath: str) -> str:
    """Where the upload record of ``relpath`` lives in the staging directory ``staging``."""
    return join(staging, RECORDS_DIRNAME, _record_name(relpath))


def _record_name(relpath: str) -> str:
    return hashlib.sha256(relpath.encode("utf-8", "surrogatepass")).hexdigest() + ".json"


def encode_record(record: FileRecord) -> bytes:
    doc = {
        "format": _FORMAT,
        "path": record.path,
        "size": record.size,
        "crc32c": record.crc32c,
        "sha256": record.sha256,
    }
    return json.dumps(doc, ensure_ascii=False).encode()


def parse_record(data: bytes | None, name: str) -> FileRecord | None:
    """The record in ``data`` if it is well formed and stored under its own name; else None.

    Records are read from a bucket anyone with write access can plant objects in: oversized,
    deeply nested, truncated or non-UTF-8 JSON, paths that are absolute or climb out with '..',
    and sizes beyond int64 are all refused (the file is then uploaded, never trusted)."""
    try:
        doc = load_json(data or b"", _RECORD_LIMIT)
        path, size, crc, sha = doc["path"], doc["size"], doc["crc32c"], doc["sha256"]
        valid = (
            doc.get("format") == _FORMAT
            and check_relative_path(path, "record path") == path
            and isinstance(size, int)
            and not isinstance(size, bool)
            and 0 <= size < 2**63
            and _is_hex(crc, 8)
            and (sha is None or _is_hex(sha, 64))
            and name == _record_name(path)
        )
    except (ValueError, KeyError, TypeError, AttributeError):  # InvalidArgumentError included
        return None
    return FileRecord(path, size, sha, crc.lower()) if valid else None


def _is_hex(value: object, length: int) -> bool:
    if not isinstance(value, str) or len(value) != length:
        return False
    return all(c in "0123456789abcdefABCDEF" for c in value)


def keeps_checksums(storage: Storage) -> bool:
    """The store may keep every object's CRC32C as checked on upload (S3 by HeadObject with
    ChecksumMode, GCS in its listings): a staged object can then prove itself."""
    return storage.kind in ("s3", "gcs")


_s3_probe_lock = threading.Lock()


def needs_record(plan: Any, f: SourceFile) -> bool:
    """Write an upload record for ``f`` (just uploaded to ``plan.staging``): SHA-256 is
    recorded (the store keeps only CRC32C), or the store keeps no checksum of its own. On S3
    the first upload of each bucket in a process asks the store (one HEAD)."""
    storage = plan.storage
    if plan.checksum == "sha256" or not keeps_checksums(storage):
        return True
    if storage.kind == "gcs":  # every GCS object has its crc32c
        return False
    bucket = storage_checksums.bucket_uri(storage, plan.base)
    keeps = storage_checksums.S3_KEEPS_CRC32C
    with _s3_probe_lock:
        if bucket not in keeps:
            try:
                got = storage.stored_checksums(plan.staging, [f.relpath], missing_ok=True)
            except StorageError:  # ask again next time; record meanwhile
                return True
            keeps[bucket] = got.get(f.relpath) is not None
            if not keeps[bucket]:
                log.info("%s keeps no CRC32C of uploads: writing upload records", bucket)
        return not keeps[bucket]


class Leftovers:
    """One listing of the staging area: which local files some writer's staging could hold."""

    def __init__(self, storage: Storage, base: str, files: Sequence[SourceFile]) -> None:
        self.root = staging_root(base)
        entries = storage.list_tree(self.root)
        self.sizes = sizes = {e.relpath: e.size for e in entries}
        self.crcs = {e.relpath: e.crc32c for e in entries if e.crc32c}  # GCS lists them
        by_name = {_record_name(f.relpath): f for f in files}
        wanted = {f.relpath: f.size for f in files}
        self.records: dict[str, list[tuple[str, str]]] = {}  # relpath -> [(owner, record path)]
        spoken_for: set[str] = set()  # "<owner>/<relpath>" that some record names
        marker = f"/{RECORDS_DIRNAME}/"
        for e in entries:
            owner, sep, name = e.relpath.partition(marker)
            f = by_name.get(name) if sep and owner and "/" not in owner else None
            if f is not None:
                spoken_for.add(f"{owner}/{f.relpath}")  # a broken record disowns its object
            # <root>/<version>-<writer>/.cloud-exporter-uploaded/<name>.json beside the object
            if f is None or e.size > _RECORD_LIMIT or sizes.get(f"{owner}/{f.relpath}") != f.size:
                continue
            self.records.setdefault(f.relpath, []).append((owner, join(self.root, e.relpath)))
        # Staged objects of the right size that no record names: their store-kept CRC32C is
        # the proof (S3 and GCS check it on upload), read by ``candidates``. On S3 each costs
        # a HEAD: the newest BARE_PER_FILE of each file are asked, so a staging area full of
        # dead attempts (or planted objects) costs at most that many HEADs per file.
        bare = [
            e
            for e in entries
            if "/" in e.relpath
            and e.relpath not in spoken_for
            and wanted.get(e.relpath.partition("/")[2]) == e.size
        ]
        if storage.kind == "s3":
            bare = _newest_per_file(bare, BARE_PER_FILE)
        self.bare: list[str] = [e.relpath for e in bare]

    @property
    def maybe(self) -> set[str]:
        """Relative paths some staged object could hold."""
        return {*self.records, *(p.partition("/")[2] for p in self.bare)}

    def candidates(self, storage: Storage) -> dict[str, list[tuple[str, FileRecord]]]:
        """{relpath: [(staged object, what it holds)]}: the records read (one batched read)
        whose relative path and size match the listed object beside them, and the objects
        without a record whose stored CRC32C is known (GCS: listed; S3: HEAD, in parallel)."""
        paths = [p for found in self.records.values() for _, p in found]
        got = storage.read_many(paths, _RECORD_LIMIT)
        out: dict[str, list[tuple[str, FileRecord]]] = {}
        for relpath, found in self.records.items():
            for owner, path in found:
                record = parse_record(got.get(path), path.rsplit("/", 1)[-1])
                stored = self.crcs.get(f"{owner}/{relpath}", record.crc32c if record else None)
                # Where the store lists its own CRC32C (GCS) it must agree with the record.
                if (
                    record is not None
                    and record.path == relpath
                    and record.size == self.sizes.get(f"{owner}/{relpath}")
                    and stored == record.crc32c
                ):
                    staged = join(self.root, owner, relpath)
                    out.setdefault(relpath, []).append((staged, record))
        for path, crc in self._stored(storage).items():
            relpath = path.partition("/")[2]
            if crc is not None:
                record = FileRecord(relpath, self.sizes[path], None, crc)
                out.setdefault(relpath, []).append((join(self.root, path), record))
        return out

    def _stored(self, storage: Storage) -> dict[str, str | None]:
        if not self.bare or not keeps_checksums(storage):
            return {}
        if storage.kind == "gcs":
            return {p: self.crcs.get(p) for p in self.bare}
        try:  # an object gone since the listing (its live owner finished) proves nothing
            return storage.stored_checksums(self.root, self.bare, missing_ok=True)
        except StorageError as exc:  # resume is an optimisation: those files are uploaded
            log.warning("cannot read the checksums of staged objects (%s); uploading", exc)
            return {}


def _newest_per_file(entries: list[Entry], most: int) -> list[Entry]:
    """At most ``most`` staged objects per relative path, the most recently written first
    (objects with no listed time last)."""
    by_file: dict[str, list[Entry]] = {}
    for e in entries:
        by_file.setdefault(e.relpath.partition("/")[2], []).append(e)
    kept = []
    for found in by_file.values():
        found.sort(key=lambda e: -(e.mtime or 0.0))
        kept += found[:most]
    return kept


@contextlib.contextmanager
def collect() -> Iterator[list[Session]]:
    """Collect the resume sessions of the publishes made in this context (the CLI's report)."""
    sessions: list[Session] = []
    token = _collectors.set(sessions)
    try:
        yield sessions
    finally:
        _collectors.reset(token)


class Session:
    """One publish's resume state (``plan.resume``): what it reuses, the records it writes."""

    def __init__(self, storage: Storage, base: str, files: list[SourceFile]) -> None:
        self.leftovers = Leftovers(storage, base, files)
        self.sources: dict[str, str] = {}  # relpath -> proven staged object of another writer
        self.reused_files = 0
        self.reused_bytes = 0
        self._placed: set[str] = set()
        self._lock = threading.Lock()
        sessions = _collectors.get()
        if sessions is not None:
            sessions.append(self)

    def reuse(self, plan: Any) -> list[SourceFile]:
        """Prove what the staging area may hold; return the files still to upload.

        Files no staged object could match start uploading at once, while the records of the
        others are read and their local files hashed (in parallel). A proven file gets its
        manifest record now; its object is copied into place by :meth:`place`."""
        from .commit import upload_hashed  # commit imports nothing of resume: no cycle

        could = self.leftovers.maybe
        maybe = [f for f in plan.files if f.relpath in could]
        fresh = [f for f in plan.files if f.relpath not in could]
        if not maybe:
            return fresh
        failed: list[BaseException] = []

        def upload_fresh() -> None:
            try:
                upload_hashed(plan, plan.staging, fresh, plan.staged)
            except BaseException as exc:  # raised below, in the publishing thread
                failed.append(exc)

        uploader = threading.Thread(target=upload_fresh, name="cloud-exporter-resume", daemon=True)
        uploader.start()
        try:
            candidates = self.leftovers.candidates(plan.storage)

            def prove(f: SourceFile) -> None:
                found = candidates.get(f.relpath)
                if not found:
                    return
                sha256 = plan.checksum == "sha256" or any(r.sha256 for _, r in found)
                digests = hash_file(f.local_path, sha256=sha256)
                staged = next((s for s, r in found if _proves(digests, r)), None)
                if staged is None:
                    return
                sha = digests.sha256 if plan.checksum == "sha256" else None
                with self._lock:
                    self.sources[f.relpath] = staged
                    plan.records[f.relpath] = FileRecord(f.relpath, f.size, sha, digests.crc32c)

            plan.storage.run_parallel(prove, maybe)
        finally:
            uploader.join()
        if failed:
            raise failed[0]
        return [f for f in maybe if f.relpath not in self.sources]

    def place(self, plan: Any, pairs: Sequence[tuple[str, str]]) -> None:
        """Copy ``(own staged object, version path)`` pairs into place; a reused file's object
        is copied from the staging it was proven in. Each copy must report the CRC32C proven
        (or uploaded); an object gone since its proof, or replaced by other bytes (the copy
        then reports another CRC32C), is uploaded again, overwriting what that copy placed."""
        prefix = plan.staging + "/"
        by_relpath = {f.relpath: f for f in plan.files}

        def one(pair: tuple[str, str]) -> None:
            relpath = pair[0][len(prefix) :] if pair[0].startswith(prefix) else None
            f = by_relpath.get(relpath) if relpath is not None else None
            record = plan.records.get(relpath) if relpath is not None else None
            want = record.crc32c if record is not None else None
            source = self.sources.get(relpath) if relpath is not None else None
            if source is None or f is None:
                sizes = None if f is None else {pair[0]: f.size}
                plan.storage.copy([pair], sizes, {pair[0]: want} if want else None)
                return
            try:  # the proven object has the file's size: no look-up before the copy
                plan.storage.copy([(source, pair[1])], {source: f.size}, {source: want or ""})
            except (LocationNotFoundError, ChecksumMismatchError) as exc:
                log.info("cannot reuse %s (%s); uploading it", plan.storage.uri(source), exc)
                self._upload(plan, f, pair)
                return
            with self._lock:
                self.reused_files += 1
                self.reused_bytes += f.size
            if plan.on_file is not None:
                plan.on_file(f.size)

        plan.storage.run_parallel(one, pairs)
        with self._lock:
            self._placed.update(dst for _, dst in pairs)
            done = len(self._placed) == len(plan.files)
        if done and self.reused_files:
            log.info(
                "resumed: reused %d staged files (%d bytes) of an interrupted publish",
                self.reused_files,
                self.reused_bytes,
            )

    def _upload(self, plan: Any, f: SourceFile, pair: tuple[str, str]) -> None:
        with self._lock:
            plan.staged.append(pair[0])
        sha256 = plan.checksum == "sha256"
        digests = plan.storage.upload_hashed(f.local_path, pair[0], sha256)
        # The manifest describes the bytes sent (the same as proven, unless the file changed).
        plan.records[f.relpath] = FileRecord(f.relpath, f.size, digests.sha256, digests.crc32c)
        self._write_record(plan, f)
        plan.storage.copy([pair], {pair[0]: f.size}, {pair[0]: digests.crc32c})
        if plan.on_file is not None:
            plan.on_file(f.size)

    def step(self, plan: Any, f: SourceFile) -> None:
        """Called once ``f`` is uploaded and hashed (one pass): writes its record, where one
        is needed (``needs_record``)."""
        self._write_record(plan, f)

    def _write_record(self, plan: Any, f: SourceFile) -> None:
        if not needs_record(plan, f):
            return
        path = record_path(plan.staging, f.relpath)
        with self._lock:
            plan.staged.append(path)  # removed with the staging files, on success or abort
        try:
            plan.storage.create_exclusive(
                path, encode_record(plan.records[f.relpath]), durable=False
            )
        except StorageError as exc:  # resume is an optimisation: the publish goes on
            log.warning("could not write the upload record %s (%s)", plan.storage.uri(path), exc)


def _proves(digests: Digests, record: FileRecord) -> bool:
    """The local bytes equal the recorded ones: CRC32C always, SHA-256 when recorded."""
    if digests.crc32c != record.crc32c:
        return False
    return record.sha256 is None or digests.sha256 == record.sha256
