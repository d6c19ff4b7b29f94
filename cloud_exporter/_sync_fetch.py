"""Downloading one export's files for sync: verified against the marker, resumable.

Large files stream to ``<stage>.parts/<n>`` and are hashed while they download (GCS objects of
RANGED_BYTES and more come down in concurrent ranges, then are hashed once from the page cache);
small files are read in batches and hashed in memory. A file enters the staged download
``<stage>/`` only once its size and checksums match its record; ``<stage>.parts`` is never
trusted.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from typing import Any

from .errors import CorruptExportError
from .layout import version_dir
from .marker import ExportInfo, FileRecord
from .source import CHUNK, Digests, hash_file
from .storage import Storage

TAIL_HASH_BYTES = 8 << 20  # files this large are hashed while they download
SMALL_FILE_BYTES = 1 << 20  # files this small are read in batches, hashed in memory
SMALL_BATCH_BYTES = 16 << 20  # memory bound of one batch
SMALL_BATCH_FILES = 64
RANGED_BYTES = 64 << 20  # GCS objects this large are downloaded in concurrent ranges
_ranged_slot = threading.Semaphore(1)  # one ranged download at a time: bounded prefetch memory


def download_files(
    storage: Storage,
    base: str,
    info: ExportInfo,
    stage: str,
    progress: Callable[[int], None] | None,
    stop: threading.Event | None,
) -> list[str]:
    """Download every file of ``info`` not yet verified in ``stage``, each verified against
    its record (CorruptExportError otherwise); return the paths found missing (pruned?)."""
    parts = stage + ".parts"
    base_dir = version_dir(base, info.version)
    abort = threading.Event()
    gone: list[str] = []

    def fetch(item: tuple[int, FileRecord]) -> None:
        n, record = item
        if abort.is_set() or (stop is not None and stop.is_set()):
            return
        dest = os.path.join(stage, *record.path.split("/"))
        if _verified(stage, record):
            return  # verified by an earlier run
        part = os.path.join(parts, str(n))
        remote = f"{base_dir}/{record.path}"
        # Very large objects on GCS come down in concurrent ranges (one such file at a time,
        # bounded prefetch); the file is then hashed once from the page cache.
        ranged = storage.kind == "gcs" and record.size >= RANGED_BYTES
        tail = _TailHasher(part, record) if record.size >= TAIL_HASH_BYTES and not ranged else None
        try:
            if tail is not None:
                tail.start()
            with _ranged_slot if ranged else contextlib.nullcontext():
                storage.download(remote, part, ranged=ranged)
        except FileNotFoundError:
            abort.set()
            gone.append(record.path)
            return
        finally:
            if tail is not None:
                tail.finish()
        # The hash taken during the download is trusted only if it matches; else hash again.
        problem = None if tail is not None and tail.matches() else _mismatch(part, record)
        if problem:
            abort.set()
            raise CorruptExportError(
                f"{info.uri}/{record.path} does not match its marker ({problem}); verify it with "
                "'cloud-exporter verify --deep' and publish it again"
            )
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        os.replace(part, dest)
        if progress is not None:
            progress(record.size)

    def fetch_small(batch: list[tuple[int, FileRecord]]) -> None:
        """Small files in one batched read: hashed in memory, written once (no second read)."""
        todo = [(n, r) for n, r in batch if not _verified(stage, r)]
        if abort.is_set() or (stop is not None and stop.is_set()) or not todo:
            return
        remote = {n: f"{base_dir}/{r.path}" for n, r in todo}
        got = storage.read_many(list(remote.values()), max(r.size for _, r in todo))
        for n, record in todo:
            data = got.get(remote[n])
            if data is None:
                abort.set()
                gone.append(record.path)
                return
            digests = Digests(sha256=record.sha256 is not None)
            digests.update(data)
            problem = (
                f"{len(data)} bytes, marker says {record.size}"
                if len(data) != record.size
                else _digest_problem(digests, record)
            )
            if problem:
                abort.set()
                raise CorruptExportError(
                    f"{info.uri}/{record.path} does not match its marker ({problem}); verify it "
                    "with 'cloud-exporter verify --deep' and publish it again"
                )
            part = os.path.join(parts, str(n))
            os.makedirs(parts, exist_ok=True)
            _write_file(part, data)
            dest = os.path.join(stage, *record.path.split("/"))
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            os.replace(part, dest)
            if progress is not None:
                progress(record.size)

    items = sorted(enumerate(info.files), key=lambda p: -p[1].size)
    large = [(fetch, item) for item in items if item[1].size > SMALL_FILE_BYTES]
    small = [item for item in items if item[1].size <= SMALL_FILE_BYTES]
    work: list[tuple[Callable[[Any], None], Any]] = large + [
        (fetch_small, batch) for batch in _batches(small)
    ]
    storage.run_parallel(lambda job: job[0](job[1]), work)
    return gone


def _verified(stage: str, record: FileRecord) -> bool:
    """The file is in the staged download already and matches its record (an earlier run)."""
    dest = os.path.join(stage, *record.path.split("/"))
    return os.path.isfile(dest) and _mismatch(dest, record) is None


def _batches(
    items: list[tuple[int, FileRecord]],
) -> list[list[tuple[int, FileRecord]]]:
    """Small files grouped for batched reads: at most SMALL_BATCH_BYTES (memory) per batch."""
    batches: list[list[tuple[int, FileRecord]]] = []
    size = SMALL_BATCH_BYTES
    for item in items:
        if size + item[1].size > SMALL_BATCH_BYTES or len(batches[-1]) >= SMALL_BATCH_FILES:
            batches.append([])
            size = 0
        batches[-1].append(item)
        size += item[1].size
    return batches


def _mismatch(path: str, record: FileRecord) -> str | None:
    """Why a local file does not match its record (size, then every checksum it has), or None."""
    size = os.path.getsize(path)
    if size != record.size:
        return f"{size} bytes, marker says {record.size}"
    return _digest_problem(hash_file(path, sha256=record.sha256 is not None), record)


def _digest_problem(digests: Digests, record: FileRecord) -> str | None:
    if record.crc32c is not None and digests.crc32c != record.crc32c:
        return "crc32c mismatch"
    if not digests.matches(record):
        return "sha256 mismatch"
    return None


class _TailHasher(threading.Thread):
    """Hashes a file while the download writes it, so verifying a large file adds no pass."""

    def __init__(self, path: str, record: FileRecord) -> None:
        super().__init__(daemon=True)
        self.path, self.record, self.size = path, record, 0
        self.digests = Digests(sha256=record.sha256 is not None)
        self._done = threading.Event()

    def finish(self) -> None:
        self._done.set()
        self.join()

    def matches(self) -> bool:
        ok = self.size == self.record.size == os.path.getsize(self.path)
        return ok and _digest_problem(self.digests, self.record) is None

    def run(self) -> None:
        while True:
            try:
                f = open(self.path, "rb")  # noqa: SIM115 - closed below
                break
            except FileNotFoundError:
                if self._done.wait(0.005):
                    return
        with f:
            while True:
                done = self._done.is_set()  # read before the read: empty then means complete
                chunk = f.read(CHUNK)
                if chunk:
                    self.size += len(chunk)
                    self.digests.update(chunk)
                elif done:
                    return
                else:
                    self._done.wait(0.005)


def _write_file(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
