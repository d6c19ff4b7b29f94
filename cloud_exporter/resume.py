"""Resume an interrupted staged publish: reuse what a dead publisher proved it uploaded.

After each file is both uploaded to its staging directory and hashed, the publisher writes a
small record beside it, ``<staging>/.cloud-exporter-uploaded/<sha256(relpath)>.json`` holding
the relative path, size and SHA-256. A record is written only after the upload completed, by the
one writer that owns that staging directory, which never writes that path again: the record is
the proof that the object holds those bytes.

The next publish to the same base (any process, any host) lists the staging area once, reads the
records, hashes the local files that a record could match (same relative path and size) and
reuses an object only when the SHA-256 matches and the listing shows the object with that size.
Reuse is a server-side copy into the new publisher's **own** staging directory: nobody ever
writes into, adopts or deletes another writer's staging area, so whether its owner is dead or
alive (or on a clock hours off) does not matter; a copy whose source has gone in the meantime
(its owner finished, a prune removed it) falls back to an upload. Two resumers of the same
leftovers each build a complete version of their own. What is never resumed is removed by
prune's orphan rules or the bucket lifecycle rule, like any leftover staging.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from typing import Any

from .errors import StorageError
from .layout import join, staging_root
from .marker import FileRecord
from .source import Digests, SourceFile, hash_file
from .storage import Storage
from .untrusted import load_json

log = logging.getLogger(__name__)

RECORDS_DIRNAME = ".cloud-exporter-uploaded"
_FORMAT = 1
_RECORD_LIMIT = 1 << 16


def record_path(staging: str, relpath: str) -> str:
    """Where the upload record of ``relpath`` lives in the staging directory ``staging``."""
    return join(staging, RECORDS_DIRNAME, hashlib.sha256(relpath.encode()).hexdigest() + ".json")


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
    """The record in ``data`` if it is well formed and stored under its own name; else None."""
    try:
        doc = load_json(data or b"", _RECORD_LIMIT)
        path, size, crc, sha = doc["path"], doc["size"], doc["crc32c"], doc["sha256"]
        valid = (
            doc.get("format") == _FORMAT
            and isinstance(path, str)
            and isinstance(size, int)
            and not isinstance(size, bool)
            and size >= 0
            and isinstance(crc, str)
            and len(crc) == 8
            and (sha is None or (isinstance(sha, str) and len(sha) == 64))
            and name == hashlib.sha256(path.encode()).hexdigest() + ".json"
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    return FileRecord(path, size, sha, crc) if valid else None


def find_reusable(
    storage: Storage, base: str, files: list[SourceFile]
) -> dict[str, tuple[str, Digests]]:
    """{relpath: (staged object, the local file's digests)} for every local file a staged object
    is proven to hold exactly (same size and CRC32C, and SHA-256 where the record has one),
    from one listing of the staging area."""
    root = staging_root(base)
    entries = storage.list_tree(root)
    sizes = {e.relpath: e.size for e in entries}
    marker = f"/{RECORDS_DIRNAME}/"
    paths = [
        join(root, e.relpath)
        for e in entries
        if marker in e.relpath and e.size <= _RECORD_LIMIT and e.relpath.endswith(".json")
    ]
    local = {f.relpath: f for f in files}
    candidates: dict[str, list[tuple[str, FileRecord]]] = {}
    for path, data in storage.read_many(paths, _RECORD_LIMIT).items():
        staging, _, name = path.rpartition(marker)
        record = parse_record(data, name)
        source = local.get(record.path) if record is not None else None
        if record is None or source is None or source.size != record.size:
            continue
        staged = join(staging, record.path)
        if sizes.get(staged[len(root) + 1 :]) != record.size:
            continue  # the object is gone (or never was whole): nothing to reuse
        candidates.setdefault(record.path, []).append((staged, record))
    digests: dict[str, Digests] = {}

    def digest(relpath: str) -> None:
        digests[relpath] = hash_file(local[relpath].local_path, sha256=True)

    storage.run_parallel(digest, sorted(candidates))
    reusable: dict[str, tuple[str, Digests]] = {}
    for relpath, found in candidates.items():
        for staged, record in found:
            if digests[relpath].matches(record):
                reusable[relpath] = (staged, digests[relpath])
                break
    return reusable


class Session:
    """One publish's resume state: what it reuses, and the records it writes (``plan.resume``)."""

    def __init__(self, storage: Storage, base: str, files: list[SourceFile]) -> None:
        self.found = find_reusable(storage, base, files)
        self.reused_files = 0
        self.reused_bytes = 0
        self._lock = threading.Lock()

    def reuse(self, plan: Any) -> list[SourceFile]:
        """Copy every proven staged object into ``plan.staging``; return the files to upload."""
        todo: list[SourceFile] = []

        def copy(f: SourceFile) -> None:
            dst = join(plan.staging, f.relpath)
            try:
                plan.storage.copy([(self.found[f.relpath][0], dst)])
            except StorageError as exc:  # gone since the listing: upload it instead
                log.info("cannot reuse %s (%s); uploading it", self.found[f.relpath][0], exc)
                with self._lock:
                    todo.append(f)
                return
            with self._lock:
                plan.staged.append(dst)
                digests = self.found[f.relpath][1]
                sha = digests.sha256 if plan.checksum == "sha256" else None
                plan.records[f.relpath] = FileRecord(f.relpath, f.size, sha, digests.crc32c)
                self.reused_files += 1
                self.reused_bytes += f.size
            self._write_record(plan, f)
            if plan.on_file is not None:
                plan.on_file(f.size)

        reusable = [f for f in plan.files if f.relpath in self.found]
        todo.extend(f for f in plan.files if f.relpath not in self.found)
        plan.storage.run_parallel(copy, reusable)
        if self.reused_files:
            log.info(
                "resumed: reused %d staged files (%d bytes) of an interrupted publish",
                self.reused_files,
                self.reused_bytes,
            )
        order = {f.relpath: i for i, f in enumerate(plan.files)}
        return sorted(todo, key=lambda f: order[f.relpath])

    def step(self, plan: Any, f: SourceFile) -> None:
        """Called once ``f`` is uploaded and hashed (one pass): writes its record."""
        self._write_record(plan, f)

    def _write_record(self, plan: Any, f: SourceFile) -> None:
        path = record_path(plan.staging, f.relpath)
        with self._lock:
            plan.staged.append(path)  # removed with the staging files, on success or abort
        try:
            plan.storage.create_exclusive(path, encode_record(plan.records[f.relpath]))
        except StorageError as exc:  # resume is an optimisation: the publish goes on
            log.warning("could not write the upload record %s (%s)", plan.storage.uri(path), exc)
