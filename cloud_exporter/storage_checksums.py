"""The storage module's checksummed transfers: uploads that declare their CRC32C, so the store
rejects corrupted bytes, and the checksums a store keeps, read back without reading bytes.

Part of ``storage`` (it works through a :class:`~cloud_exporter.storage.Storage`'s retried
calls); split out to keep each module readable. GCS: crc32c in a single-request upload's
object resource or in a resumable upload's final X-Goog-Hash, and in every listing. S3:
ChecksumCRC32C on single-request uploads, per part plus a FULL_OBJECT CRC32C on multipart
ones, read back by HeadObject with ChecksumMode.
"""

from __future__ import annotations

import contextlib
import json
import logging
import mimetypes
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import google_crc32c
from fsspec.asyn import sync

from .errors import (
    ChecksumMismatchError,
    InvalidSourceError,
    LocationNotFoundError,
    StorageError,
)
from .source import Digests, crc32c_b64, crc32c_hex, hash_file, read_hashed

if TYPE_CHECKING:
    from .storage import Storage

log = logging.getLogger(__name__)

TRANSFER_CHUNK = 8 << 20  # multipart part size; files up to this size go in one request
GCS_CHUNK = 32 << 20  # a resumable upload's chunk (a multiple of 256 KiB, as GCS requires)
PARTS_IN_FLIGHT = 4  # concurrent parts of the one large upload allowed at a time (s3fs)
#: Files up to this size go in one request on S3 and GCS even above TRANSFER_CHUNK, one such
#: file at a time: the bytes held are those of the parts a multipart upload keeps in flight,
#: and one request costs less than create + parts + complete (or initiate + chunks).
SINGLE_REQUEST_MAX = PARTS_IN_FLIGHT * TRANSFER_CHUNK
HEADS_IN_FLIGHT = 16  # concurrent HeadObject requests of a deep verify on S3
REJECTED_UPLOAD_TRIES = 3  # an upload the store rejects for its checksum is sent this often
_REJECTION_MARKERS = ("baddigest", "checksum", "crc32c", "md5")


def prepare(kind: str) -> None:
    """Make the backend library able to send and keep our checksums (once per process)."""
    if kind == "gcs":
        _allow_gcs_crc32c_upload_field()
    if kind == "s3":
        _single_request_s3_copies()


# Per S3 bucket (``bucket_uri``): does the store hand back the CRC32C an upload declared? Real
# S3 and moto do; an S3-compatible store may not (every upload then needs its record). Learnt
# once per bucket and process by ``resume.needs_record`` (one HEAD after the first upload).
S3_KEEPS_CRC32C: dict[str, bool] = {}


def bucket_uri(storage: Storage, path: str) -> str:
    return storage.uri(path.split("/", 1)[0])


def keeps_crc32c(storage: Storage, path: str) -> bool:
    """The store is known to keep the CRC32C of every object we upload below ``path``'s
    bucket: GCS always; S3 once the bucket's first upload was asked about."""
    if storage.kind == "gcs":
        return True
    return storage.kind == "s3" and S3_KEEPS_CRC32C.get(bucket_uri(storage, path)) is True


def upload_hashed(
    storage: Storage,
    local_path: str,
    remote: str,
    sha256: bool,
    read: tuple[bytes, Digests] | None = None,
) -> Digests:
    """Upload one file declaring its CRC32C, so that the store rejects corrupted bytes.

    Every file is read once: the bytes hashed are the bytes sent. Up to TRANSFER_CHUNK in
    one request, as many at once as the caller runs; up to SINGLE_REQUEST_MAX in one request
    too, one such file at a time; larger files as an S3 multipart upload (``_s3_multipart``)
    or a GCS resumable upload (``_gcs_resumable``), chunk by chunk. Declared: GCS crc32c in the
    upload metadata, or in X-Goog-Hash on a resumable upload's final chunk (and compared
    with the crc32c of the object the store answers); S3 ChecksumCRC32C on single-request
    uploads, per part plus a FULL_OBJECT CRC32C on multipart ones. A rejected upload is sent
    again (read from disk again), then raises ChecksumMismatchError. ``read``: the file's bytes
    and checksums, already read in one pass (``read_ahead``), sent as they are.
    """
    size = len(read[0]) if read is not None else os.path.getsize(local_path)
    for attempt in range(1, REJECTED_UPLOAD_TRIES + 1):
        try:
            if size <= TRANSFER_CHUNK or (read is not None and storage.kind in ("s3", "gcs")):
                digests = _single_request(storage, local_path, remote, sha256, read)
            elif size <= SINGLE_REQUEST_MAX and storage.kind in ("s3", "gcs"):
                with storage._large_file:  # memory ~ one file of SINGLE_REQUEST_MAX at most
                    digests = _single_request(storage, local_path, remote, sha256)
            elif storage.kind == "s3":
                with storage._large_file:  # memory ~ parts in flight x TRANSFER_CHUNK
                    digests = _s3_multipart(storage, local_path, remote, size, sha256)
            elif storage.kind == "gcs":
                with storage._large_file:  # memory ~ one GCS_CHUNK
                    digests = _gcs_resumable(storage, local_path, remote, size, sha256)
            else:
                digests = hash_file(local_path, sha256)
                with storage._large_file:
                    storage._write("upload", remote, storage.fs.put_file, local_path, remote)
            return digests
        except (OSError, ValueError, StorageError) as exc:  # StorageError: wrapped by _call
            if not _is_checksum_rejection(exc):
                raise
            log.warning("%s rejected (attempt %d): %s", storage.uri(remote), attempt, exc)
            last, read = exc, None
    raise ChecksumMismatchError(
        f"the store rejected {storage.uri(remote)} {REJECTED_UPLOAD_TRIES} times: its bytes did "
        f"not match the CRC32C of {local_path} ({last}); check the disk and network, then "
        "publish again"
    ) from last


def _single_request(
    storage: Storage,
    local_path: str,
    remote: str,
    sha256: bool,
    read: tuple[bytes, Digests] | None = None,
) -> Digests:
    """One request carrying the whole file and its declared CRC32C."""
    data, digests = read if read is not None else read_hashed(local_path, sha256)
    declare = _declare(storage, digests, single=True)
    storage._write("upload", remote, storage.fs.pipe_file, remote, data, **declare)
    return digests


def _s3_multipart(
    storage: Storage, local_path: str, remote: str, size: int, sha256: bool
) -> Digests:
    """A multipart upload that reads the file once, part by part (PARTS_IN_FLIGHT parts in
    flight): each part declares its CRC32C, and the completion declares the whole file's
    CRC32C as a FULL_OBJECT checksum, so S3 checks every part and the object, and HEAD
    with ChecksumMode returns our CRC32C. Aborted on any failure."""
    real = storage.real
    bucket, key, _ = real.split_path(remote)
    where = {"Bucket": bucket, "Key": key}
    started = _api(
        storage,
        "create_multipart_upload",
        remote,
        real.call_s3,
        "create_multipart_upload",
        **where,
        ChecksumAlgorithm="CRC32C",
        ChecksumType="FULL_OBJECT",
    )
    where["UploadId"] = started["UploadId"]
    digests, slots = Digests(sha256), threading.Semaphore(PARTS_IN_FLIGHT)

    def part(number: int, chunk: bytes) -> dict[str, Any]:
        try:
            crc = crc32c_b64(f"{google_crc32c.value(chunk):08x}")
            sent = _api(
                storage,
                "upload_part",
                remote,
                real.call_s3,
                "upload_part",
                **where,
                PartNumber=number,
                Body=chunk,
                ChecksumAlgorithm="CRC32C",
                ChecksumCRC32C=crc,
            )
            return {"PartNumber": number, "ETag": sent["ETag"], "ChecksumCRC32C": crc}
        finally:
            slots.release()

    try:
        with open(local_path, "rb") as f, ThreadPoolExecutor(PARTS_IN_FLIGHT) as pool:
            futures = []
            sent = 0
            while chunk := f.read(TRANSFER_CHUNK):
                digests.update(chunk)
                sent += len(chunk)
                slots.acquire()  # at most PARTS_IN_FLIGHT parts held in memory
                futures.append(pool.submit(part, len(futures) + 1, chunk))
            parts = [future.result() for future in futures]
        if sent != size:  # before the completion: no object is made of it
            raise _changed_size(local_path, size)
        ours = crc32c_b64(digests.crc32c)
        done = _api(
            storage,
            "complete_multipart_upload",
            remote,
            real.call_s3,
            "complete_multipart_upload",
            **where,
            MultipartUpload={"Parts": parts},
            ChecksumCRC32C=ours,
            ChecksumType="FULL_OBJECT",
        )
    except BaseException:
        with contextlib.suppress(Exception):
            _through_faults(
                storage, "abort_upload", remote, real.call_s3, "abort_multipart_upload", **where
            )
        raise
    if done.get("ChecksumCRC32C") not in (None, ours):
        # Real S3 refuses a completion whose declared CRC32C it cannot confirm; a store that
        # answers another value computes something else (moto without the crc32c package:
        # CRC32). Deep verify then reads this object's bytes instead of trusting the store.
        log.warning(
            "%s: the store recorded CRC32C %s, the uploaded bytes have %s (an emulator "
            "without CRC32C support?); deep verify will read this object",
            storage.uri(remote),
            done.get("ChecksumCRC32C"),
            ours,
        )
    return digests


def _gcs_resumable(
    storage: Storage, local_path: str, remote: str, size: int, sha256: bool
) -> Digests:
    """A resumable upload that reads the file once, one GCS_CHUNK at a time (GCS takes a
    session's chunks in order). The final chunk declares the whole file's CRC32C in
    X-Goog-Hash; the object resource it answers carries the crc32c the store computed, which
    must be ours. Any failure deletes the session (or the object) and raises."""
    real = storage.real
    bucket, key, _ = real.split_path(remote)
    kind = mimetypes.guess_type(local_path)[0] or "application/octet-stream"
    location = _api(storage, "initiate_upload", remote, _gcs_start, real, bucket, key, kind)
    digests, offset, answer = Digests(sha256), 0, None
    try:
        with open(local_path, "rb") as f:
            while offset < size:
                chunk = f.read(min(GCS_CHUNK, size - offset))
                final = offset + len(chunk) >= size
                if len(chunk) < min(GCS_CHUNK, size - offset) or (final and f.read(1)):
                    raise _changed_size(local_path, size)  # before the object completes
                digests.update(chunk)
                declared = crc32c_b64(digests.crc32c) if final else None
                try:
                    answer = _api(
                        storage,
                        "upload_chunk",
                        remote,
                        _gcs_send,
                        real,
                        location,
                        chunk,
                        (offset, size, kind, declared),
                    )
                except LocationNotFoundError:
                    if not final:
                        raise
                    answer = _finished(storage, remote)  # completed, but the answer was lost
                offset += len(chunk)
    except BaseException:
        with contextlib.suppress(Exception):
            _through_faults(storage, "abort_upload", remote, _gcs_abort, real, location)
        raise
    stored = crc32c_hex(answer.get("crc32c", "")) if isinstance(answer, dict) else None
    if stored is not None and stored != digests.crc32c:
        # The store kept other bytes than we sent (fake-gcs-server appends a chunk sent twice
        # after a lost response). Not committed (no marker yet): delete it, count a rejection.
        with contextlib.suppress(Exception):
            storage._write("delete", remote, storage.fs.rm_file, remote)
        raise OSError(f"400 crc32c mismatch: the store computed {stored}, ours {digests.crc32c}")
    return digests


def _finished(storage: Storage, remote: str) -> dict[str, Any]:
    """The object a session completed when the final chunk's answer was lost, and its retry
    met a closed session (fake-gcs-server answers 404; GCS answers with the object)."""
    storage.forget(remote)
    try:
        return dict(storage._call("stat", remote, storage.real.info, remote))
    except FileNotFoundError:
        raise storage._missing("upload", remote) from None


def _changed_size(local_path: str, size: int) -> InvalidSourceError:
    return InvalidSourceError(
        f"{local_path} changed size while it was uploaded ({size} bytes when the upload "
        "began); publish a directory that nothing writes to any more"
    )


def _gcs_start(fs: Any, bucket: str, key: str, kind: str) -> str:
    from gcsfs.core import initiate_upload

    return str(sync(fs.loop, initiate_upload, fs, bucket, key, kind))


def _gcs_send(
    fs: Any, location: str, chunk: bytes, where: tuple[int, int, str, str | None]
) -> dict[str, Any] | None:
    """POST one chunk at ``offset`` of ``size`` bytes, with X-Goog-Hash when ``declared``;
    a 308 whose Range stops short of the chunk's end gets the rest sent again."""
    offset, size, kind, declared = where
    start, end = offset, offset + len(chunk)
    while True:
        head = {
            "Content-Type": kind,
            "Content-Length": str(end - start),
            "Content-Range": f"bytes {start}-{end - 1}/{size}",
        }
        if declared:
            head["X-Goog-Hash"] = f"crc32c={declared}"
        piece = memoryview(chunk)[start - offset :]
        headers, text = sync(fs.loop, fs._call, "POST", location, headers=head, data=piece)
        persisted = headers.get("Range")  # "bytes=0-N": what the session holds so far
        held = int(str(persisted).rsplit("-", 1)[1]) + 1 if persisted else end
        if held >= end:
            return json.loads(text) if text else None
        if held <= start:  # no progress, or bytes of earlier chunks lost: give up on it
            raise OSError(
                f"the upload session holds {held} bytes after a chunk sent from byte {start}"
            )
        start = held


def _gcs_abort(fs: Any, location: str) -> None:
    sync(fs.loop, fs._call, "DELETE", location)


def _api(storage: Storage, method: str, remote: str, fn: Any, *args: Any, **kw: Any) -> Any:
    """One retried call of the backend's own API (no fsspec method does it)."""
    return storage._write(
        "upload", remote, _through_faults, storage, method, remote, fn, *args, **kw
    )


def _through_faults(
    storage: Storage, method: str, remote: str | list[str], fn: Any, *args: Any, **kw: Any
) -> Any:
    """``fn(*args, **kw)`` once, through the fault layer where one wraps the filesystem (so
    tests can fail or crash these calls like any other)."""
    via = getattr(storage.fs, "backend_call", None)
    return fn(*args, **kw) if via is None else via(method, remote, fn, *args, **kw)


def _declare(storage: Storage, digests: Digests, single: bool) -> dict[str, Any]:
    if storage.kind == "gcs":
        return {"fixed_key_metadata": {"crc32c": crc32c_b64(digests.crc32c)}}
    if storage.kind == "s3" and single:
        return {"ChecksumAlgorithm": "CRC32C", "ChecksumCRC32C": crc32c_b64(digests.crc32c)}
    return {}


def stored_checksums(
    storage: Storage, prefix: str, relpaths: Sequence[str], missing_ok: bool = False
) -> dict[str, str | None]:
    """The CRC32C (8 hex digits) the store keeps for each object, None where it keeps none
    (or, with ``missing_ok``, where the object has gone).

    GCS: one fresh listing (crc32c is in every object resource). S3: HeadObject with
    ChecksumMode=ENABLED, HEADS_IN_FLIGHT at a time. Other filesystems keep none. No
    object's bytes are read.
    """
    if storage.kind == "gcs":
        listed = {e.relpath: e.crc32c for e in storage.list_tree(prefix)}
        return {p: listed.get(p) for p in relpaths}
    out: dict[str, str | None] = dict.fromkeys(relpaths)
    if storage.kind != "s3":
        return out
    real = storage.real

    def head(relpath: str) -> None:
        path = f"{prefix}/{relpath}"
        bucket, key, _ = real.split_path(path)
        try:
            got = storage._call(
                "stat",
                path,
                real.call_s3,
                "head_object",
                Bucket=bucket,
                Key=key,
                ChecksumMode="ENABLED",
            )
        except (FileNotFoundError, LocationNotFoundError):
            if not missing_ok:
                raise
            return
        value = got.get("ChecksumCRC32C")
        out[relpath] = crc32c_hex(value) if isinstance(value, str) else None

    with ThreadPoolExecutor(max(1, min(HEADS_IN_FLIGHT, len(relpaths)))) as pool:
        list(pool.map(head, relpaths))
    return out


def _is_checksum_rejection(exc: BaseException) -> bool:
    """An upload refused because its bytes did not match the declared checksum (HTTP 400)."""
    text = f"{type(exc).__name__} {exc} {exc.__cause__!r}".lower()
    return (any(m in text for m in _REJECTION_MARKERS) and "400" in text) or "baddigest" in text


def _allow_gcs_crc32c_upload_field() -> None:
    """Let gcsfs put ``crc32c`` into an upload's object resource (its fixed_key_metadata
    names a fixed set of fields; the JSON API validates a crc32c given there)."""
    import gcsfs.core

    gcsfs.core.SUPPORTED_FIXED_KEY_METADATA.setdefault("crc32c", "crc32c")


S3_COPY_OBJECT_LIMIT = 5 << 30  # the largest object one CopyObject request may copy


def _single_request_s3_copies() -> None:
    """Let s3fs copy objects up to 5 GiB with one CopyObject (its default switches to a
    multipart copy above 150 MiB). A multipart copy's parts carry no checksums, so the copy
    would lose the full-object CRC32C that deep verify compares; CopyObject keeps the source's.
    Process-wide, like s3fs's own constant; copies above 5 GiB stay multipart."""
    import s3fs.core

    s3fs.core.MANAGED_COPY_THRESHOLD = max(s3fs.core.MANAGED_COPY_THRESHOLD, S3_COPY_OBJECT_LIMIT)
