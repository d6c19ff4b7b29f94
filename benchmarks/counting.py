"""Request counting at two levels.

* HTTP: every request the client sends, by operation. For s3fs a botocore ``before-send`` hook
  on its client (one event per HTTP attempt); for gcsfs a wrapper around the instance's
  ``_request`` (one per request; gcsfs's own retries of it would not show).
* fsspec: every call made on the filesystem object, from the call log of
  ``cloud_exporter.testing.FaultyFileSystem`` used as a pure recorder (no faults configured).

Multipart transfers cost several HTTP requests for one object: ``multipart_extra`` counts the
requests beyond the first one of each such object (parts and completes; the initiation counts
as the object's request), so ``mutating - multipart_extra`` is one request per object written.
"""

from __future__ import annotations

import contextlib
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

S3_MUTATING = frozenset(
    {
        "PutObject",
        "CopyObject",
        "DeleteObject",
        "DeleteObjects",
        "CreateMultipartUpload",
        "UploadPart",
        "UploadPartCopy",
        "CompleteMultipartUpload",
        "AbortMultipartUpload",
    }
)
S3_MULTIPART_EXTRA = frozenset({"UploadPart", "UploadPartCopy", "CompleteMultipartUpload"})
GCS_MUTATING = frozenset(
    {"upload", "upload-init", "upload-chunk", "rewrite", "delete", "batch", "compose"}
)
GCS_MULTIPART_EXTRA = frozenset({"upload-chunk"})
LIST_OPS = frozenset({"ListObjectsV2", "ListObjects", "list"})
READ_OPS = frozenset({"GetObject", "get"})
INFO_OPS = frozenset({"HeadObject", "info"})
DELETE_OPS = frozenset({"DeleteObjects", "DeleteObject", "delete", "batch"})


@dataclass
class RequestCounts:
    """Requests by operation name, with the classifications the targets need."""

    ops: Counter[str] = field(default_factory=Counter)

    def _sum(self, names: frozenset[str]) -> int:
        return sum(n for op, n in self.ops.items() if op in names)

    @property
    def total(self) -> int:
        return sum(self.ops.values())

    @property
    def mutating(self) -> int:
        return self._sum(S3_MUTATING | GCS_MUTATING)

    @property
    def multipart_extra(self) -> int:
        return self._sum(S3_MULTIPART_EXTRA | GCS_MULTIPART_EXTRA)

    @property
    def lists(self) -> int:
        return self._sum(LIST_OPS)

    @property
    def reads(self) -> int:
        return self._sum(READ_OPS)

    @property
    def infos(self) -> int:
        return self._sum(INFO_OPS)

    @property
    def deletes(self) -> int:
        return self._sum(DELETE_OPS)

    def detail(self) -> str:
        return ", ".join(f"{op} {n}" for op, n in sorted(self.ops.items()))

    def to_dict(self) -> dict[str, Any]:
        return {
            "ops": dict(self.ops),
            "total": self.total,
            "mutating": self.mutating,
            "multipart_extra": self.multipart_extra,
            "lists": self.lists,
            "reads": self.reads,
            "infos": self.infos,
            "deletes": self.deletes,
        }


def gcs_operation(method: str, url: str, params: dict[str, Any]) -> str:
    """A short operation name for one gcsfs request (JSON API paths)."""
    path = urlsplit(url).path
    query = urlsplit(url).query
    method = method.upper()
    if "/batch/" in path:
        return "batch"
    if "/upload/" in path or "upload_id=" in query or "upload_id" in params:
        if method == "PUT" or "upload_id=" in query:
            return "upload-chunk"
        kind = params.get("uploadType") or ("resumable" if "resumable" in query else "")
        return "upload-init" if kind == "resumable" else "upload"
    if "/rewriteTo/" in path:
        return "rewrite"
    if "/compose" in path:
        return "compose"
    if method == "DELETE":
        return "delete"
    if path.rstrip("/").endswith("/o"):
        return "list"
    if "/o/" in path:
        return "get" if params.get("alt") == "media" or "alt=media" in query else "info"
    return f"{method} {path.rsplit('/', 1)[-1] or path}"


class HttpCounter:
    """Counts the HTTP requests one filesystem instance sends (thread-safe)."""

    def __init__(self) -> None:
        self._ops: Counter[str] = Counter()
        self._lock = threading.Lock()

    def add(self, op: str) -> None:
        with self._lock:
            self._ops[op] += 1

    def snapshot(self) -> Counter[str]:
        with self._lock:
            return Counter(self._ops)

    @contextlib.contextmanager
    def measure(self) -> Iterator[RequestCounts]:
        """Fill the yielded RequestCounts with the requests sent inside the block."""
        before = self.snapshot()
        result = RequestCounts()
        try:
            yield result
        finally:
            after = self.snapshot()
            after.subtract(before)
            result.ops = Counter({op: n for op, n in after.items() if n > 0})

    def attach(self, fs: Any) -> None:
        """Hook into an s3fs or gcsfs instance; other filesystems make no HTTP requests."""
        name = type(fs).__name__
        if name == "S3FileSystem":
            self._attach_s3(fs)
        elif "GCS" in name or getattr(fs, "protocol", None) in (("gs", "gcs"), ("gcs", "gs")):
            self._attach_gcs(fs)

    def _attach_s3(self, fs: Any) -> None:
        client = fs.s3  # connects (creates the aiobotocore client) if needed

        def before_send(event_name: str = "", **_: Any) -> None:
            self.add(event_name.rsplit(".", 1)[-1])

        client.meta.events.register("before-send.s3", before_send)

    def _attach_gcs(self, fs: Any) -> None:
        original = fs._request

        async def counted(method: str, path: str, *args: Any, **kwargs: Any) -> Any:
            url = path if path.startswith("http") else fs._format_path(path, args)
            self.add(gcs_operation(method, url, kwargs))
            return await original(method, path, *args, **kwargs)

        fs._request = counted


def fsspec_recorder(fs: Any) -> Any | None:
    """A FaultyFileSystem with no faults around ``fs``, or None when it is not available."""
    try:
        from cloud_exporter.testing import FaultyFileSystem
    except ImportError:
        return None
    return FaultyFileSystem(fs)


def fsspec_counts(recorder: Any) -> dict[str, Any]:
    """{'calls', 'mutating', 'listings'} from a recorder's call log (cache drops excluded)."""
    calls = [c for c in recorder.calls if c.method != "invalidate_cache"]
    return {
        "calls": len(calls),
        "mutating": sum(1 for c in calls if c.mutating),
        "listings": sum(1 for c in calls if c.method in ("ls", "find", "glob", "walk", "du")),
        "by_method": dict(Counter(c.method for c in calls)),
    }
