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
FORMAT_VERSION = 1
MAX_MARKER_BYTES = 16 << 20
MAX_FILES = 200_000
MAX_FILE_SIZE = 1 << 44  # 16 TiB, beyond any object store's object limit
MAX_METADATA_DEPTH = 32  # what publish accepts; readers allow the marker's own 2 levels more
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
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
    """One file of an export: path relative to the version directory, size, SHA-256."""

    path: str
    size: int
    sha256: str


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
            "files": [f.__dict__ for f in self.files],
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
        "files": [{"path": f.path, "size": f.size, "sha256": f.sha256} for f in files],
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
    if doc["format"] != FORMAT or doc["format_version"] != FORMAT_VERSION:
        raise bad(f"unknown format {doc['format']!r} version {doc['format_version']!r}")
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
    files = _parse_files(doc["files"], bad)
    return ExportInfo(
        version=expected_version,
        uri=uri,
        created=float(created),
        files=files,
        metadata=doc["metadata"],
        writer_id=doc["writer_id"],
        library_version=doc["library_version"],
    )


def _parse_files(raw: object, bad: Any) -> tuple[FileRecord, ...]:
    if not isinstance(raw, list) or not raw or len(raw) > MAX_FILES:
        raise bad("files is not a non-empty list of bounded length")
    records = []
    seen = set()
    for item in raw:
        if not isinstance(item, dict) or set(item) != {"path", "size", "sha256"}:
            raise bad("a file entry has unexpected keys")
        path, size, sha = item["path"], item["size"], item["sha256"]
        try:
            check_relative_path(path, "file path")
        except InvalidArgumentError as exc:
            raise bad(str(exc)) from None
        if path == MARKER_NAME or path in seen:
            raise bad(f"file path {path!r} is reserved or duplicated")
        if not _is_int(size) or not 0 <= size <= MAX_FILE_SIZE:
            raise bad(f"size of {path!r} is not an integer in [0, {MAX_FILE_SIZE}]")
        if not isinstance(sha, str) or not _SHA256.match(sha):
            raise bad(f"sha256 of {path!r} is not 64 lowercase hex digits")
        seen.add(path)
        records.append(FileRecord(path, size, sha))
    if not seen.intersection(SAVED_MODEL_NAMES):
        raise bad("no saved_model.pb or saved_model.pbtxt is listed")
    return tuple(records)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
