"""The one place that talks to fsspec: resolution, fresh listings, transfers, exclusive creates.

Every call goes through the RetryPolicy; transfers run on a bounded thread pool (fsspec's async
backends multiplex them on their own event loop). Callers get plain values back and never see a
cached listing: every read first drops what the (possibly shared) filesystem instance cached for
that path, its parents and everything below it.

Paths are literal. fsspec reads ``*``, ``?`` and ``[`` as glob patterns in its batch calls
(``rm``, ``cat``, ``copy``, ``expand_path``); paths that hold one go through the per-object calls
instead, which take them as they are.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import shutil
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from glob import has_magic
from typing import Any, TypeVar

import fsspec
from fsspec.asyn import AsyncFileSystem
from fsspec.implementations.local import LocalFileSystem
from fsspec.implementations.memory import MemoryFileSystem

from . import storage_checksums as checksummed
from . import storage_deletes as deletes
from . import storage_exclusive as exclusive
from .backends import (
    RANGED_GET_OPTIONS,
    bounded_get_options,
    bounded_put_options,
    innermost,
    resolve,
)
from .errors import (
    InvalidArgumentError,
    LocationNotFoundError,
    PermissionDeniedError,
    StorageError,
)
from .retry import (
    BACKEND_ERRORS,
    DEFAULT_RETRY,
    RetryPolicy,
    is_empty_range,
    is_permission_denied,
)
from .source import Digests, digest_stream
from .storage_copies import copy_checked
from .storage_pages import Entry, child_pages, list_pages, listed_mtime, paged, walk_local

log = logging.getLogger(__name__)
T = TypeVar("T")

CLOCK_PROBE_PREFIX = ".cloud-exporter-clock-"  # store_now's probe objects (orphans if it dies)
DELETE_BATCH = 1000  # S3 DeleteObjects takes at most 1000 keys per request
# memory:// lives in this process: a lock per path makes its creates exclusive; creates of other
# paths never wait on it, and it is reentrant (a test hook may publish from inside a create).
_MEMORY_CREATE_LOCKS: dict[str, threading.RLock] = {}
_MEMORY_LOCKS_GUARD = threading.Lock()
READS_IN_FLIGHT = 64  # concurrent GETs of one read_many batch (markers of list/latest/prune)


def _memory_create_lock(path: str) -> threading.RLock:
    with _MEMORY_LOCKS_GUARD:
        return _MEMORY_CREATE_LOCKS.setdefault(path, threading.RLock())


class Storage:
    """A filesystem plus the policies the library applies to every call."""

    def __init__(self, fs: Any, retry: RetryPolicy = DEFAULT_RETRY, concurrency: int = 8) -> None:
        if concurrency < 1:
            raise InvalidArgumentError("concurrency must be >= 1")
        self.fs = fs
        self.retry = retry
        self.concurrency = concurrency
        real = innermost(fs)
        self.is_local = isinstance(real, LocalFileSystem)
        #: Listings that show exactly what is there (local disk, no wrapper): no listing lags.
        self.exact_listings = self.is_local and fs is real
        self._is_memory = isinstance(real, MemoryFileSystem)
        self._put_options = bounded_put_options(real)
        self._get_options = bounded_get_options(real)
        self._large_file = threading.Semaphore(1)  # one multipart upload at a time
        protocols = real.protocol if isinstance(real.protocol, (tuple, list)) else (real.protocol,)
        self.kind = "s3" if "s3" in protocols else "gcs" if "gs" in protocols else "other"
        self.real = real  # the innermost fsspec filesystem (under any wrappers)
        checksummed.prepare(self.kind)

    # -- naming ---------------------------------------------------------------------------
    def uri(self, path: str) -> str:
        """The path with its scheme, as users pass it back in."""
        return self.fs.unstrip_protocol(path)

    def _call(self, what: str, path: str, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        try:
            return self.retry.call(f"{what} {self.uri(path)}", fn, *args, **kw)
        except (FileNotFoundError, FileExistsError):
            raise  # answers, not failures: each caller decides what they mean
        except Exception as exc:
            if not isinstance(exc, OSError) and type(exc).__name__ not in BACKEND_ERRORS:
                raise
            if isinstance(exc, OSError) and is_permission_denied(exc):
                raise PermissionDeniedError(
                    f"permission denied to {what} {self.uri(path)}: grant the training identity "
                    "object create/get/list/delete on the export prefix (see terraform/)"
                ) from exc
            if is_empty_range(exc):
                raise
            raise StorageError(
                f"cannot {what} {self.uri(path)}: {exc}; the storage service refused the "
                "request (check the URI, the endpoint and the storage options)"
            ) from exc

    def _write(self, what: str, path: str, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        """A mutation: not-found here means the bucket (or the copy's source) is missing."""
        try:
            return self._call(what, path, fn, *args, **kw)
        except FileNotFoundError as exc:
            raise self._missing(what, path) from exc

    def _missing(self, what: str, path: str) -> LocationNotFoundError:
        return LocationNotFoundError(
            f"cannot {what} {self.uri(path)}: the bucket or its source does not exist (or is "
            "not visible to these credentials); create the bucket (see terraform/) or fix the URI"
        )

    def forget(self, path: str) -> None:
        """Drop every cached listing of ``path``, its parents and anything below it."""
        self.fs.invalidate_cache(path)
        cache = getattr(innermost(self.fs), "dircache", None)
        if not cache:
            return
        below = self.fs._strip_protocol(path).rstrip("/") + "/"
        for key in [k for k in list(cache) if str(k).startswith(below)]:
            cache.pop(key, None)

    # -- listings (always fresh) ------------------------------------------------------------
    def list_tree(self, prefix: str) -> list[Entry]:
        """Every object below ``prefix``, from a fresh listing; [] when there is none."""
        self.forget(prefix)
        try:
            if self.exact_listings:
                return self._call("list", prefix, walk_local, prefix)
            if paged(self):  # our own pages: an empty prefix costs one request, not three
                return [e for page in list_pages(self, prefix) for e in page]
            found = self._call("list", prefix, self.fs.find, prefix, withdirs=False, detail=True)
        except FileNotFoundError as exc:
            if self.is_local or self._is_memory:
                return []
            raise self._missing("list", prefix) from exc  # a missing prefix lists as empty
        root = prefix.rstrip("/") + "/"
        return [
            Entry.listed(path[len(root) :], info)
            for path, info in found.items()
            if info.get("type", "file") == "file" and path.startswith(root)
        ]

    def list_children(self, prefix: str) -> list[str]:
        """Names directly below ``prefix`` (objects and pseudo-directories), freshly listed:
        on S3 and GCS our own delimiter pages (``storage_pages.child_pages``), else ``ls``."""
        if paged(self):
            try:
                return sorted({n for page in child_pages(self, prefix) for n in page if n})
            except LocationNotFoundError:
                return []
        self.forget(prefix)
        try:
            items = self._call("list", prefix, self.fs.ls, prefix, detail=False)
        except FileNotFoundError:
            return []
        names = {str(p).rstrip("/").rsplit("/", 1)[-1] for p in items}
        return sorted(n for n in names if n)

    # -- reads ----------------------------------------------------------------------------
    def read_bytes(self, path: str, limit: int) -> bytes | None:
        """The object's bytes, None if it does not exist; at most ``limit + 1`` bytes are read."""
        try:
            return self._call("read", path, self.fs.cat_file, path, start=0, end=limit + 1)
        except FileNotFoundError:
            return None
        except Exception as exc:  # a range read of an empty object: 416 on S3 and GCS
            if not is_empty_range(exc) or self.size_of(path) != 0:
                raise
            return b""

    def read_many(self, paths: Sequence[str], limit: int) -> dict[str, bytes | None]:
        """Read many small objects with one batched ``cat``: one ranged GET per object (no
        HEAD), READS_IN_FLIGHT at a time on async backends; objects the batch failed on (and
        paths with glob characters) are read again one by one, with retries."""
        if not paths:
            return {}
        if self.exact_listings:  # local disk: a plain read each (no fsspec batch to set up)
            return {p: self.read_bytes(p, limit) for p in paths}
        batch = [p for p in paths if not has_magic(p)]  # the rest: literal single reads
        for path in batch:  # the batch may consult cached listings of each object's folder
            self.fs.invalidate_cache(path)
        bounded = {"batch_size": READS_IN_FLIGHT} if isinstance(self.fs, AsyncFileSystem) else {}
        try:
            got = (
                self.fs.cat(batch, on_error="return", start=0, end=limit + 1, **bounded)
                if batch
                else {}
            )
        except Exception:  # the whole batch failed: fall back to single reads
            got = {}
        out: dict[str, bytes | None] = {}
        again: list[str] = []
        for path in paths:
            value = got.get(path, got.get(self.fs._strip_protocol(path)))
            if isinstance(value, bytes) and len(value) <= limit:
                out[path] = value
            elif isinstance(value, FileNotFoundError):
                out[path] = None
            else:
                again.append(path)

        def single(path: str) -> None:
            out[path] = self.read_bytes(path, limit)

        self.run_parallel(single, again)
        return out

    def size_of(self, path: str) -> int | None:
        """Size from a fresh HEAD of one object (not a listing); None if it does not exist."""
        info = self._head(path)
        return int(info.get("size") or 0) if info is not None else None

    def mtime_of(self, path: str) -> float | None:
        """The store's modification time of one object, from a fresh HEAD; None if missing."""
        info = self._head(path)
        return listed_mtime(info) if info is not None else None

    def store_now(self, directory: str) -> float:
        """The store's clock now: the modification time of a probe object written (and
        removed) in ``directory``. Ages of stored objects are judged against this, never
        against this machine's clock, which may be hours off."""
        probe = f"{directory.rstrip('/')}/{CLOCK_PROBE_PREFIX}{uuid.uuid4().hex}"
        self.create_exclusive(probe, b"")
        try:
            stamp = self.mtime_of(probe)
        finally:
            self.delete_one(probe)
        if stamp is None:
            raise StorageError(f"{self.uri(directory)}: the store reports no modification times")
        return stamp

    def _head(self, path: str) -> dict[str, Any] | None:
        self.forget(path)
        try:
            info = self._call("stat", path, self.fs.info, path)
        except FileNotFoundError:
            return None
        return info if info.get("type", "file") == "file" else None

    def download(self, path: str, local_path: str, ranged: bool = False) -> None:
        """Stream one object (path taken literally) to a local file, replacing it; retried as a
        whole. Memory stays at the backend's read chunk; FileNotFoundError if it is gone.
        ``ranged`` (GCS): fetch concurrent ranges, at most RANGED_PREFETCH bytes in memory."""
        os.makedirs(os.path.dirname(local_path), exist_ok=True)
        options = RANGED_GET_OPTIONS.get(self.kind, {}) if ranged else self._get_options
        self._call("download", path, self.fs.get_file, path, local_path, **options)

    def open_read(self, path: str) -> Any:
        """A binary stream of one object; FileNotFoundError when it does not exist."""
        self.forget(path)
        return self._call("open", path, self.fs.open, path, "rb")

    def read_digests(self, path: str, sha256: bool) -> Digests:
        """Stream one object's bytes (a download) and return their checksums."""

        def read() -> Digests:
            self.fs.invalidate_cache(path)  # a cached size or ETag may be stale
            with self.fs.open(path, "rb") as f:
                return digest_stream(f, sha256)[0]

        return self._call("read", path, read)

    # -- writes ---------------------------------------------------------------------------
    def create_exclusive(self, path: str, data: bytes, durable: bool = True) -> bool:
        """Write ``data`` only if nothing exists at ``path``; False when something does.
        On local disk a ``durable`` write is fsynced (markers); claims, records and journals
        matter only while their writer lives and skip it."""
        try:
            if self.is_local:
                self._write("create", path, _local_create_exclusive, path, data, durable)
            elif self._is_memory:
                with _memory_create_lock(path):
                    self._write("create", path, self.fs.pipe_file, path, data, mode="create")
            else:
                exclusive.refuse_known_overwriter(self, path)
                create = partial(self._write, "create", path, self.fs.pipe_file, path, data)
                create(mode="create")
                exclusive.confirm_exclusive(self, path, partial(create, mode="create"))
        except FileExistsError:
            return False
        return True

    def upload_hashed(
        self,
        local_path: str,
        remote: str,
        sha256: bool = False,
        read: tuple[bytes, Digests] | None = None,
    ) -> Digests:
        """Upload one file declaring its CRC32C (see ``checksummed.upload_hashed``)."""
        return checksummed.upload_hashed(self, local_path, remote, sha256, read)

    def stored_checksums(
        self, prefix: str, relpaths: Sequence[str], missing_ok: bool = False
    ) -> dict[str, str | None]:
        """The CRC32C the store keeps per object (see ``checksummed.stored_checksums``)."""
        return checksummed.stored_checksums(self, prefix, relpaths, missing_ok)

    def copy(
        self,
        pairs: Sequence[tuple[str, str]],
        sizes: Mapping[str, int] | None = None,
        crcs: Mapping[str, str] | None = None,
    ) -> None:
        """Server-side copy of ``(src, dst)`` pairs, concurrently (no bytes through the client).
        ``sizes`` and ``crcs`` (by source path, where the caller knows them): see
        ``storage_copies.copy_checked``; a copy that lands other bytes raises
        ChecksumMismatchError."""
        copy_checked(self, pairs, sizes or {}, crcs or {})

    def run_parallel(self, fn: Callable[[T], Any], items: Sequence[T]) -> None:
        """Apply ``fn`` to each item on <= ``concurrency`` threads; re-raise the first error.
        Each item runs in a copy of the caller's context (its context variables are seen)."""
        if len(items) <= 1 or self.concurrency == 1:
            for item in items:
                fn(item)
            return
        with ThreadPoolExecutor(min(self.concurrency, len(items))) as pool:
            futures = [pool.submit(contextvars.copy_context().run, fn, item) for item in items]
            errors = [f.exception() for f in futures]
        first = next((e for e in errors if e is not None), None)
        if first is not None:
            raise first

    def together(self, *jobs: Callable[[], Any]) -> None:
        """Run independent requests at once (one round trip for all), the first on this
        thread; the first job's error wins, else the first other error. On local disk and
        memory:// they run in order, stopping at an error: there is no round trip to overlap,
        and fsspec's memory filesystem iterates its shared dict to list, so a listing beside a
        write on another thread can fail ("dictionary changed size during iteration")."""
        if self.is_local or self._is_memory or len(jobs) < 2:
            for job in jobs:
                job()
            return
        with ThreadPoolExecutor(len(jobs) - 1) as pool:
            others = [pool.submit(contextvars.copy_context().run, job) for job in jobs[1:]]
            try:
                jobs[0]()
            finally:  # leaving the block waits for the others; if the first failed, moot
                errors = [f.exception() for f in others]
        first = next((e for e in errors if e is not None), None)
        if first is not None:
            raise first

    def delete(self, paths: Iterable[str]) -> None:
        """Delete objects in batches; objects that are already gone count as deleted."""
        paths = list(paths)
        literal = [p for p in paths if has_magic(p)]  # a batch rm would expand these as globs
        paths = [p for p in paths if not has_magic(p)]
        self.run_parallel(self.delete_one, literal)
        for start in range(0, len(paths), DELETE_BATCH):
            batch = paths[start : start + DELETE_BATCH]
            if self.kind == "s3":  # DeleteObjects: refusals come back per key
                deletes.delete_s3_batch(self, batch)
                continue
            try:
                self._call("delete", batch[0], self.fs.rm, batch)
            except FileNotFoundError:
                for path in batch:  # someone else deleted part of the batch first
                    self.delete_one(path)

    def delete_one(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._call("delete", path, self.fs.rm_file, path)

    def remove_local_tree(self, path: str) -> None:
        """Local disk only: delete a directory tree (missing is fine)."""
        if self.is_local:
            shutil.rmtree(path, ignore_errors=True)

    def remove_dir_if_empty(self, path: str) -> None:
        """Local disk only: remove one directory if it is empty (others may be using it)."""
        if self.is_local:
            with contextlib.suppress(OSError):
                os.rmdir(path)

    def remove_empty_dirs(self, prefix: str) -> None:
        """Local disk only: remove directories left empty below and at ``prefix``."""
        if not self.is_local or not os.path.isdir(prefix):
            return
        for dirpath, _dirs, _files in sorted(os.walk(prefix), key=lambda w: -len(w[0])):
            with contextlib.suppress(OSError):  # not empty, or removed by another process
                os.rmdir(dirpath)

    def path_in_store(self, uri: str, plain_is_ours: bool) -> str | None:
        """``uri`` stripped for this filesystem, or None if it names another store. A plain
        path counts as local disk unless ``plain_is_ours``."""
        protocols = self.fs.protocol
        protocols = (protocols,) if isinstance(protocols, str) else tuple(protocols)
        scheme = fsspec.core.split_protocol(uri)[0]
        if scheme is None:
            scheme = protocols[0] if plain_is_ours else "file"
        if scheme not in protocols and not (scheme == "file" and "local" in protocols):
            return None
        return resolve(uri, self.fs)[1]


def _local_create_exclusive(path: str, data: bytes, durable: bool) -> None:
    for _ in range(100):  # another publisher may remove the empty parent between the two calls
        os.makedirs(os.path.dirname(path), exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            break
        except FileNotFoundError:
            continue
    else:
        raise FileNotFoundError(f"cannot create {path}: its directory keeps disappearing")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        if durable:
            f.flush()
            os.fsync(f.fileno())
