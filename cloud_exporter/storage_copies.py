"""Server-side copies that report what landed.

Part of ``storage``, beside ``storage_checksums``. Every copy we make of a known size is one
request that answers with the CRC32C the store now keeps for the new object (S3: the
CopyObjectResult of one CopyObject, which keeps the source's checksum; GCS: the object
resource that ends a rewrite). ``Storage.copy`` compares it with the CRC32C the caller proved
or uploaded, so bytes other than those (a staged object replaced after a resume proved it, a
store fault) are caught by the copy itself: no extra request, and no window between a proof
and the copy that relies on it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

from fsspec.asyn import sync

from .errors import ChecksumMismatchError
from .source import crc32c_hex
from .storage_checksums import S3_COPY_OBJECT_LIMIT, _through_faults, keeps_crc32c

if TYPE_CHECKING:
    from .storage import Storage

log = logging.getLogger(__name__)


def copy_checked(
    storage: Storage,
    pairs: Sequence[tuple[str, str]],
    sizes: Mapping[str, int],
    crcs: Mapping[str, str],
) -> None:
    """``Storage.copy``: copy ``(src, dst)`` pairs server-side, concurrently.

    ``sizes`` (source path: bytes) spare S3 the look-up of each source's size: one request
    per file (``copy_sized``), which answers with the copy's CRC32C. ``crcs`` (source path:
    8 hex digits) is what the caller proved or uploaded there; a copy reporting another is read
    back (``_check_copied``) and raises ChecksumMismatchError unless its bytes match; so is a
    copy answered without a CRC32C where the store keeps one (``keeps_crc32c``): the source
    was replaced by an upload that declared none. Without
    a size s3fs takes it from its listings cache when it has one, or a HEAD; another thread
    sharing the instance may have cached a listing from before the source was written. A
    not-found answer therefore drops that cache and tries again before it counts."""

    def one(pair: tuple[str, str]) -> None:
        size = sizes.get(pair[0])
        copy = storage.fs.cp_file if size is None else partial(copy_sized, storage, size)
        for _ in range(2):
            try:
                got = storage._call("copy", pair[1], copy, *pair)
                break
            except FileNotFoundError:
                storage.forget(pair[0])
        else:
            got = storage._write("copy", pair[1], copy, *pair)
        want = (crcs.get(pair[0]) or "").lower()
        if not want or got is None or got == want:
            return
        if got == "" and not keeps_crc32c(storage, pair[0]):
            return  # a store that keeps no CRC32C answers without one
        _check_copied(storage, pair, want)

    storage.run_parallel(one, pairs)


def _check_copied(storage: Storage, pair: tuple[str, str], want: str) -> None:
    """A copy reported a CRC32C other than ``want``: read the copy back before calling that a
    mismatch (a store may keep another value under that name: moto without the crc32c
    package keeps a CRC32 for multipart uploads)."""
    held = storage.read_digests(pair[1], sha256=False).crc32c
    if held != want:
        raise ChecksumMismatchError(
            f"the copy of {storage.uri(pair[0])} to {storage.uri(pair[1])} holds CRC32C "
            f"{held}, not the {want} proven or uploaded there: the source was replaced since "
            "(or the store is at fault); nothing is committed with it: publish again"
        )
    log.info("%s reports no comparable CRC32C; its bytes read back match", storage.uri(pair[1]))


def copy_sized(storage: Storage, size: int, src: str, dst: str) -> str | None:
    """Copy ``src`` (``size`` bytes, known to the caller) to ``dst`` server-side, once; return
    the CRC32C (8 hex digits) the store reports for ``dst``: "" if its answer carries none (or
    a composite one), None where this way of copying gets no answer to read.

    S3 up to 5 GiB: one CopyObject, without the HEAD or listing s3fs's ``cp_file`` sends
    first to learn the size. GCS: one rewrite (continued while the server says it is not
    done). Elsewhere ``cp_file``. A missing source raises FileNotFoundError."""
    real = storage.real
    if storage.kind == "s3" and size <= S3_COPY_OBJECT_LIMIT:
        run: Any = _s3_copy
    elif storage.kind == "gcs":
        run = _gcs_rewrite
    else:
        storage.fs.cp_file(src, dst)
        return None
    crc = _through_faults(storage, "cp_file", [src, dst], sync, real.loop, run, real, src, dst)
    return (crc32c_hex(crc) if isinstance(crc, str) else None) or ""


async def _s3_copy(fs: Any, src: str, dst: str) -> Any:
    bucket, key, version = fs.split_path(src)
    dst_bucket, dst_key, _ = fs.split_path(dst)
    source = {"Bucket": bucket, "Key": key, **({"VersionId": version} if version else {})}
    out = await fs._call_s3("copy_object", Bucket=dst_bucket, Key=dst_key, CopySource=source)
    fs.invalidate_cache(dst)
    return (out.get("CopyObjectResult") or {}).get("ChecksumCRC32C")


async def _gcs_rewrite(fs: Any, src: str, dst: str) -> Any:
    bucket, key, generation = fs.split_path(src)
    dst_bucket, dst_key, _ = fs.split_path(dst)
    token: str | None = None
    while True:
        out = await fs._call(
            "POST",
            "b/{}/o/{}/rewriteTo/b/{}/o/{}",
            bucket,
            key,
            dst_bucket,
            dst_key,
            headers={"Content-Type": "application/json"},
            json_out=True,
            sourceGeneration=generation,
            rewriteToken=token,
        )
        if out.get("done") is True:
            break
        token = out["rewriteToken"]
    fs.invalidate_cache(dst)
    return (out.get("resource") or {}).get("crc32c")
