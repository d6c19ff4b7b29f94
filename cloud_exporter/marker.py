"""The marker: a JSON manifest whose presence commits an export, and its strict parser.

A marker read from storage is untrusted input: ``parse_marker`` bounds its size, requires the
exact schema, and rejects paths that could point outside the version directory.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from .errors import CorruptExportError, InvalidArgumentError
from .layout import MARKER_NAME, SAVED_MODEL_NAMES
from .source import check_relative_path
from .untrusted import check_depth, load_json

FORMAT = "cloud-exporter-marker"
FORMAT_VERSION = 2  # 2: per-file crc32c, sha256 optional; 1: sha256 only (still read)
READ_VERSIONS = (1, 2)
MAX_MARKER_BYTES = 16 << 20
MAX_FILES = 200_000
MAX_FILE_SIZE = 1 << 44  # 16 TiB, beyond any object store's object limit
MAX_METADATA_DEPTH = 32  # what publish accepts; readers allow the marker's own 2 levels more
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_CRC32C = re.compile(r"^[0-9a-f]{8}$")
CHECKSUMS = ("crc32c", "sha256")
_KEYS = {
    "format",
    "format_version",
    "version",
    "created",
    "writer_id",
    "library_version",
    "metadata",
    "files",
}


@dataclass(frozen=True)
class FileRecord:
    """One file of an export: path relative to the version directory, size and checksums.

    ``crc32c`` is 8 lowercase hex digits (big-endian, as GCS and S3 store it in base64); markers
    of format version 1 carry only ``sha256``. Every version-2 record has ``crc32c``.
    """

    path: str
    size: int
    sha256: str | None = None
    crc32c: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": self.path, "size": self.size}
        out.update({k: getattr(self, k) for k in CHECKSUMS if getattr(self, k) is not None})
        return out


@dataclass(frozen=True)
class ExportInfo:
    """A committed export, as its marker describes it."""

    version: int
    uri: str
    created: float
    files: tuple[FileRecord, ...]
    metadata: dict[str, Any] = field(default_factory=dict)
    writer_id: str = ""
    library_version: str = ""
    #: Set by ``verify_export(deep=True)``: how each file's bytes were checked, "listing" (GCS
    #: crc32c from the listing), "head" (S3 ChecksumCRC32C) or "read" (bytes re-read and hashed).
    verified_by: dict[str, str] = field(default_factory=dict, compare=False)

    @property
    def created_at(self) -> datetime:
        return datetime.fromtimestamp(self.created, tz=timezone.utc)

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "uri": self.uri,
            "created": self.created,
            "created_at": self.created_at.isoformat(),
            "total_size": self.total_size,
            "metadata": self.metadata,
            "writer_id": self.writer_id,
            "library_version": self.library_version,
            "files": [f.to_json() for f in self.files],
            **({"verified_by": self.verified_by} if self.verified_by else {}),
        }


def encode_marker(
    version: int,
    created: float,
    files: list[FileRecord],
    metadata: dict[str, Any],
    writer_id: str,
    library_version: str,
) -> bytes:
    """Serialize a marker; metadata must be plain JSON (finite numbers, string keys)."""
    doc = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "version": version,
        "created": created,
        "writer_id": writer_id,
        "library_version": library_version,
        "metadata": metadata,
        "files": [f.to_json() for f in files],
    }
    try:
        return json.dumps(doc, allow_nan=False, sort_keys=True).encode()
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(
            f"metadata must be JSON-serializable with finite numbers ({exc}); convert values "
            "to str/int/float/bool/list/dict"
        ) from exc


def check_metadata(metadata: object) -> dict[str, Any]:
    """Validate user metadata up front, before anything is uploaded."""
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise InvalidArgumentError(f"metadata must be a dict of JSON values, got {metadata!r}")
    try:
        check_depth(metadata, MAX_METADATA_DEPTH)
    except ValueError as exc:
        raise InvalidArgumentError(f"metadata is {exc}; flatten it") from None
    encode_marker(0, 0.0, [], metadata, "", "")
    return json.loads(json.dumps(metadata))


def parse_marker(data: bytes, expected_version: int, uri: str) -> ExportInfo:
    """Parse and validate marker bytes; raise CorruptExportError naming the problem."""

    def bad(problem: str) -> CorruptExportError:
        return CorruptExportError(
            f"marker {uri}/{MARKER_NAME} is invalid: {problem}; the export is not trusted "
            "(delete the version directory or publish again)"
        )

    try:
        doc = load_json(data, MAX_MARKER_BYTES, MAX_METADATA_DEPTH + 2)
    except ValueError as exc:
        raise bad(str(exc)) from None
    if not isinstance(doc, dict) or set(doc) != _KEYS:
        raise bad("unexpected structure or keys")
    fmt_version = doc["format_version"]
    if doc["format"] != FORMAT or not _is_int(fmt_version) or fmt_version not in READ_VERSIONS:
        raise bad(f"unknown format {doc['format']!r} version {fmt_version!r}")
    if not _is_int(doc["version"]) or doc["version"] != expected_version:
        raise bad(f"version {doc['version']!r} does not match directory {expected_version}")
    created = doc["created"]
    if (
        not isinstance(created, (int, float))
        or isinstance(created, bool)
        or not (math.isfinite(created) and created > 0)
    ):
        raise bad("created time is not a positive number")
    for key in ("writer_id", "library_version"):
        if not isinstance(doc[key], str) or len(doc[key]) > 256:
            raise bad(f"{key} is not a short string")
    if not isinstance(doc["metadata"], dict):
        raise bad("metadata is not an object")
    files = _parse_files(doc["files"], bad, fmt_version)
    return ExportInfo(
        version=expected_version,
        uri=uri,
        created=float(created),
        files=files,
        metadata=doc["metadata"],
        writer_id=doc["writer_id"],
        library_version=doc["library_version"],
    )


def _parse_files(raw: object, bad: Any, fmt_version: int) -> tuple[FileRecord, ...]:
    if not isinstance(raw, list) or not raw or len(raw) > MAX_FILES:
        raise bad("files is not a non-empty list of bounded length")
    allowed = [{"path", "size", "sha256"}] if fmt_version == 1 else _V2_KEYS
    records = []
    seen = set()
    for item in raw:
        if not isinstance(item, dict) or set(item) not in allowed:
            raise bad("a file entry has unexpected keys")
        path, size, sha, crc = item["path"], item["size"], item.get("sha256"), item.get("crc32c")
        try:
            check_relative_path(path, "file path")
        except InvalidArgumentError as exc:
            raise bad(str(exc)) from None
        if path == MARKER_NAME or path in seen:
            raise bad(f"file path {path!r} is reserved or duplicated")
        if not _is_int(size) or not 0 <= size <= MAX_FILE_SIZE:
            raise bad(f"size of {path!r} is not an integer in [0, {MAX_FILE_SIZE}]")
        if sha is not None and (not isinstance(sha, str) or not _SHA256.match(sha)):
            raise bad(f"sha256 of {path!r} is not 64 lowercase hex digits")
        if crc is not None and (not isinstance(crc, str) or not _CRC32C.match(crc)):
            raise bad(f"crc32c of {path!r} is not 8 lowercase hex digits")
        seen.add(path)
        records.append(FileRecord(path, size, sha, crc))
    if not seen.intersection(SAVED_MODEL_NAMES):
        raise bad("no saved_model.pb or saved_model.pbtxt is listed")
    return tuple(records)


_V2_KEYS = [{"path", "size", "crc32c"}, {"path", "size", "crc32c", "sha256"}]


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
