"""The storage module's listings: the ``Entry`` each listed object becomes, and the paged
listing: a recursive listing handed over one page at a time, so
that a caller can start on the first page (read the markers it names) while the next is on
its way. ``list_exports`` and ``prune`` over E exports then cost about the marker reads alone,
not the listing pages plus the reads.

Part of ``storage`` (it works through a :class:`~cloud_exporter.storage.Storage`'s retried
calls). S3: ListObjectsV2 pages; GCS: objects.list pages (the JSON API's own page size cap of
1000). Both take prefixes literally, and no fsspec listing cache is read or filled. Any other
filesystem, and a filesystem wrapped by another layer (the fault-injection layer), is listed
in one piece by ``Storage.list_tree``, so every wrapper sees the call it expects.

Local disk (unwrapped) is walked with ``os.scandir`` (``walk_local``): one ``stat`` per file,
about a third of the time of fsspec's ``find``, which builds an info dict per entry; the same
entries as ``find``'s files.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from fsspec.asyn import sync

from .source import crc32c_hex

if TYPE_CHECKING:
    from .storage import Storage


@dataclass(frozen=True)
class Entry:
    """A listed object: its path relative to the listed prefix, size and modification time."""

    relpath: str
    size: int
    mtime: float | None
    crc32c: str | None = None  # 8 hex digits, where the listing carries it (GCS)

    @classmethod
    def listed(cls, relpath: str, info: dict[str, Any]) -> Entry:
        """An entry from one object of a listing: fsspec's info, S3 Contents or a GCS item."""
        crc = info.get("crc32c")
        return cls(
            relpath,
            int(info.get("size") or info.get("Size") or 0),
            listed_mtime(info),
            crc32c_hex(crc) if isinstance(crc, str) else None,
        )


def listed_mtime(info: dict[str, Any]) -> float | None:
    """The modification time of a listed object, whichever field its backend names it by."""
    for key in ("mtime", "LastModified", "updated", "created"):
        value = info.get(key)
        if value is None:
            continue
        if isinstance(value, datetime):
            return value.timestamp()
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
            except ValueError:
                continue
    return None


PAGE_SIZE = 1000  # objects per listing request (the most either store returns in one page)


def paged(storage: Storage) -> bool:
    """Whether ``list_pages`` lists ``storage`` page by page (S3 and GCS, unwrapped); other
    filesystems, and any filesystem under a wrapper, come as one page."""
    return storage.fs is storage.real and storage.kind in ("s3", "gcs")


def list_pages(
    storage: Storage, prefix: str, page_size: int | None = None
) -> Iterator[list[Entry]]:
    """Every object below ``prefix`` (a fresh listing), one page of entries at a time
    (``page_size`` objects, default PAGE_SIZE); relative paths as ``Storage.list_tree`` gives
    them. Each page request is retried on its own; a missing bucket raises
    LocationNotFoundError."""
    if not paged(storage):
        yield storage.list_tree(prefix)
        return
    yield from _pages(storage, prefix, _objects_page, page_size or PAGE_SIZE)


def child_pages(storage: Storage, prefix: str) -> Iterator[list[str]]:
    """The names directly below ``prefix`` on S3 or GCS (a paged storage: objects and
    pseudo-directories, as ``Storage.list_children`` gives them), one page at a time: a
    delimiter listing, so a page holds up to PAGE_SIZE names however many objects lie below
    each. A missing bucket raises LocationNotFoundError."""
    yield from _pages(storage, prefix, _children_page, PAGE_SIZE)


def _pages(storage: Storage, prefix: str, page: Any, size: int) -> Iterator[list[Any]]:
    """The paging loop of both listings: ``page(storage, bucket, key, token, size)`` answers
    (items, the next page's token or None); each page request is retried on its own."""
    bucket, key, _ = storage.real.split_path(prefix)
    key = key.rstrip("/") + "/" if key else ""
    token: str | None = None
    while True:
        try:
            items, token = storage._call("list", prefix, page, storage, bucket, key, token, size)
        except FileNotFoundError as exc:
            raise storage._missing("list", prefix) from exc
        yield items
        if not token:
            return


def _objects_page(
    storage: Storage, bucket: str, key: str, token: str | None, size: int
) -> tuple[list[Entry], str | None]:
    got, token = _list_request(storage, bucket, key, token, size, delimiter=False)
    entries = [
        Entry.listed(name[len(key) :], obj)
        for name, obj in _objects(storage, got)
        if name.startswith(key) and not name.endswith("/")
    ]
    return entries, token


def _children_page(
    storage: Storage, bucket: str, key: str, token: str | None, size: int
) -> tuple[list[str], str | None]:
    got, token = _list_request(storage, bucket, key, token, size, delimiter=True)
    names = [*_prefixes(storage, got), *(name for name, _ in _objects(storage, got))]
    return [n[len(key) :].rstrip("/") for n in names if n.startswith(key) and n != key], token


def _list_request(
    storage: Storage, bucket: str, key: str, token: str | None, size: int, delimiter: bool
) -> tuple[dict[str, Any], str | None]:
    """One page: S3 ListObjectsV2 or GCS objects.list (with "/" as delimiter if asked)."""
    real = storage.real
    if storage.kind == "s3":
        more = {"ContinuationToken": token} if token else {}
        if delimiter:
            more["Delimiter"] = "/"
        got = real.call_s3("list_objects_v2", Bucket=bucket, Prefix=key, MaxKeys=size, **more)
        return got, got.get("NextContinuationToken") if got.get("IsTruncated") else None
    more = {"pageToken": token} if token else {}
    if delimiter:
        more["delimiter"] = "/"
    got = sync(real.loop, real._call_list_objects, bucket, prefix=key, maxResults=size, **more)
    return got, got.get("nextPageToken")


def _objects(storage: Storage, got: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    if storage.kind == "s3":
        return [(o["Key"], o) for o in got.get("Contents") or []]
    return [(o["name"], o) for o in got.get("items") or []]


def _prefixes(storage: Storage, got: dict[str, Any]) -> list[str]:
    if storage.kind == "s3":
        return [p["Prefix"] for p in got.get("CommonPrefixes") or []]
    return list(got.get("prefixes") or [])


def walk_local(prefix: str) -> list[Entry]:
    """Every regular file below the local directory ``prefix``, sorted by relative path; links
    are left out, as ``Storage.list_tree`` leaves out what fsspec's ``find`` types "other"
    (links), so no link cycle can trap the walk. FileNotFoundError if ``prefix`` is not a
    directory; entries removed while the walk runs are left out."""
    entries: list[Entry] = []
    root = prefix.rstrip("/") or "/"
    pending = [("", root)]  # folders still to read; one open at a time (no fd per folder)
    while pending:
        rel, folder = pending.pop()
        try:
            with os.scandir(folder) as listing:
                for item in listing:
                    try:
                        if item.is_dir(follow_symlinks=False):
                            pending.append((f"{rel}{item.name}/", item.path))
                        elif item.is_file(follow_symlinks=False):
                            info = item.stat(follow_symlinks=False)
                            entries.append(Entry(rel + item.name, info.st_size, info.st_mtime))
                    except (FileNotFoundError, NotADirectoryError):
                        continue  # removed meanwhile
        except (FileNotFoundError, NotADirectoryError):
            if not rel:
                raise FileNotFoundError(prefix) from None
            continue  # a folder removed meanwhile
    entries.sort(key=lambda e: e.relpath)
    return entries
