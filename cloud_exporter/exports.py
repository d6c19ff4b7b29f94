"""Reading exports: list, latest, verify. Only marked versions exist; everything else is ignored.

Every function lists the base freshly and reads markers only where it needs their contents.
On S3 and GCS ``list_exports`` and ``latest_export`` list only the base's version directories
(a delimiter listing: a page per 1000 versions, however many files each holds) and read each
marker (``scan_versions``: concurrently, ``Storage.read_many``, page by page while the next
page lists), ``latest_export`` only the newest. ``prune`` and other filesystems list the base
recursively (``scan_base``: ~1 request per 1000 objects), since they need every file.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

from .errors import CorruptExportError, ExportNotFoundError
from .layout import MARKER_NAME, marker_path, parse_version, version_dir
from .marker import MAX_MARKER_BYTES, ExportInfo, FileRecord, parse_marker
from .retry import DEFAULT_RETRY, RetryPolicy
from .storage import Entry, Storage, resolve
from .storage_pages import child_pages, list_pages, paged

log = logging.getLogger(__name__)
Judged = tuple[list[ExportInfo], dict[int, str]]  # (valid exports ascending, {version: why})


@dataclass
class BaseListing:
    """One fresh listing of a base, grouped by version directory."""

    versions: dict[int, dict[str, Entry]] = field(default_factory=dict)
    others: list[Entry] = field(default_factory=list)  # staging, stock temp-* dirs, foreign files

    def marked(self) -> list[int]:
        """Versions whose marker object is listed, ascending."""
        return sorted(v for v, files in self.versions.items() if MARKER_NAME in files)


def list_base(storage: Storage, base: str) -> BaseListing:
    listing = BaseListing()
    _add_entries(listing, storage.list_tree(base))
    return listing


def _add_entries(listing: BaseListing, entries: Iterable[Entry]) -> list[int]:
    """Group listed entries into ``listing``; returns the versions whose marker they hold."""
    marked = []
    for entry in entries:
        head, _, rest = entry.relpath.partition("/")
        version = parse_version(head)
        if version is None or not rest:
            listing.others.append(entry)
            continue
        listing.versions.setdefault(version, {})[rest] = Entry(rest, entry.size, entry.mtime)
        if rest == MARKER_NAME:
            marked.append(version)
    return marked


def read_export(storage: Storage, base: str, version: int) -> ExportInfo:
    """Read and validate one marker; ExportNotFoundError when it does not exist."""
    return _parse(
        storage, base, version, storage.read_bytes(marker_path(base, version), MAX_MARKER_BYTES)
    )


def _parse(storage: Storage, base: str, version: int, data: bytes | None) -> ExportInfo:
    uri = storage.uri(version_dir(base, version))
    if data is None:
        raise ExportNotFoundError(
            f"no committed export {uri}: it has no marker ({MARKER_NAME}); run "
            "'cloud-exporter list' to see the committed versions"
        )
    return parse_marker(data, version, uri)


def scan_exports(
    storage: Storage, base: str, listing: BaseListing | None = None
) -> tuple[list[ExportInfo], dict[int, str]]:
    """(valid exports ascending, {version: why invalid}) from one listing and the markers."""
    if listing is None:
        return scan_versions(storage, base) if paged(storage) else scan_base(storage, base)[1:]
    return _judge(storage, base, _markers(listing, listing.marked()))


def scan_base(storage: Storage, base: str) -> tuple[BaseListing, list[ExportInfo], dict[int, str]]:
    """One fresh listing of ``base`` plus every marker it shows, read while the listing goes
    on: the markers of each page are read (on one worker, READS_IN_FLIGHT at a time) while
    the next page is fetched. Returns (listing, valid exports ascending, invalid)."""
    listing, reads = BaseListing(), []
    if not paged(storage):  # one page: nothing to overlap, no worker to start
        marked = _add_entries(listing, storage.list_tree(base))
        return (listing, *_judge(storage, base, _markers(listing, marked)))
    with ThreadPoolExecutor(1) as reader:
        for page in list_pages(storage, base):
            marked = _add_entries(listing, page)
            if marked:
                markers, ctx = _markers(listing, marked), contextvars.copy_context()
                reads.append(reader.submit(ctx.run, _judge, storage, base, markers))
        return (listing, *_gathered(reads))


def _markers(listing: BaseListing, versions: list[int]) -> dict[int, int | None]:
    return {v: listing.versions[v][MARKER_NAME].size for v in versions}


def scan_versions(storage: Storage, base: str) -> tuple[list[ExportInfo], dict[int, str]]:
    """An object store's exports (``paged``): the base's version directories from a delimiter
    listing (a page per 1000 versions, however many files each holds) and each one's marker,
    read page by page while the next page lists. A version directory without a marker (a
    publish in flight, a crashed one) is not an export and is not reported."""
    reads = []
    with ThreadPoolExecutor(1) as reader:
        for names in child_pages(storage, base):
            versions = [v for v in map(parse_version, names) if v is not None]
            if versions:
                ctx = contextvars.copy_context()
                sizes: dict[int, int | None] = dict.fromkeys(versions)
                reads.append(reader.submit(ctx.run, _judge, storage, base, sizes, True))
        return _gathered(reads)


def _gathered(reads: list[Future[Judged]]) -> Judged:
    """The judged pages, merged: (valid exports ascending, {version: why invalid})."""
    valid: list[ExportInfo] = []
    invalid: dict[int, str] = {}
    for read in reads:
        some_valid, some_invalid = read.result()
        valid += some_valid
        invalid.update(some_invalid)
    return sorted(valid, key=lambda e: e.version), invalid


def _judge(
    storage: Storage, base: str, markers: dict[int, int | None], unlisted: bool = False
) -> Judged:
    """Read and parse the markers ``{version: listed size, or None if not listed}``; with
    ``unlisted``, a marker that does not exist means no export (nothing to report)."""
    results: dict[int, ExportInfo | str] = {}
    paths = {}
    for version, size in markers.items():
        if size is not None and size > MAX_MARKER_BYTES:
            results[version] = (
                f"marker of version {version} is larger than {MAX_MARKER_BYTES} bytes"
            )
        else:
            paths[marker_path(base, version)] = version
    for path, data in storage.read_many(list(paths), MAX_MARKER_BYTES).items():
        version = paths[path]
        if data is None and unlisted:
            continue
        try:
            results[version] = _parse(storage, base, version, data)
        except (CorruptExportError, ExportNotFoundError) as exc:
            results[version] = str(exc)
    valid = [r for v, r in sorted(results.items()) if isinstance(r, ExportInfo)]
    invalid = {v: r for v, r in results.items() if isinstance(r, str)}
    for version, why in sorted(invalid.items()):
        log.warning("ignoring version %d: %s", version, why)
    return valid, invalid


def _storage(base: str, filesystem: Any, storage_options: Any, retry: RetryPolicy):
    fs, root = resolve(base, filesystem, storage_options)
    return Storage(fs, retry), root


def list_exports(
    base: str,
    *,
    filesystem: Any = None,
    storage_options: dict[str, Any] | None = None,
    retry: RetryPolicy = DEFAULT_RETRY,
) -> list[ExportInfo]:
    """Every committed export under ``base``, ascending by version (invalid markers skipped)."""
    storage, root = _storage(base, filesystem, storage_options, retry)
    return scan_exports(storage, root)[0]


def latest_export(
    base: str,
    *,
    filesystem: Any = None,
    storage_options: dict[str, Any] | None = None,
    retry: RetryPolicy = DEFAULT_RETRY,
) -> ExportInfo | None:
    """The committed export with the highest version, or None. Reads a single marker (on S3
    and GCS one more per newer version directory that has none yet: a publish in flight)."""
    storage, root = _storage(base, filesystem, storage_options, retry)
    if paged(storage):  # the version directories (a delimiter listing), newest first
        names = [n for page in child_pages(storage, root) for n in page]  # no bucket: raises
        candidates = sorted({v for v in map(parse_version, names) if v is not None})
    else:
        candidates = list_base(storage, root).marked()
    for version in reversed(candidates):
        try:
            return read_export(storage, root, version)
        except ExportNotFoundError:  # unmarked: a publish in flight (or a crashed one)
            log.debug("version %d has no marker yet", version)
        except CorruptExportError as exc:
            log.warning("skipping version %d: %s", version, exc)
    return None


def verify_export(
    base: str,
    version: int,
    *,
    deep: bool = False,
    download: bool = False,
    filesystem: Any = None,
    storage_options: dict[str, Any] | None = None,
    retry: RetryPolicy = DEFAULT_RETRY,
) -> ExportInfo:
    """Check that ``version`` is committed and intact; raise CorruptExportError if not.

    Intact means: the marker validates and the version directory holds exactly its files with
    their sizes. ``deep=True`` also compares each file's checksum with the manifest, without
    reading its bytes where the store keeps a CRC32C (GCS: from the listing; S3: HeadObject with
    ChecksumMode). A GCS object without crc32c, or with another one, counts as corrupt. Files
    with no stored CRC32C to compare (local disk, memory, version-1 markers, S3 adopted or
    foreign uploads, an S3 object rewritten without a checksum), and S3 objects whose stored
    CRC32C differs from the manifest, are read and hashed, with a warning on object stores.
    ``download=True`` re-reads every file's bytes. The returned info's ``verified_by`` says
    which method checked each file.
    """
    storage, root = _storage(base, filesystem, storage_options, retry)
    info = read_export(storage, root, version)
    listed = {e.relpath: e.size for e in storage.list_tree(version_dir(root, version))}
    listed.pop(MARKER_NAME, None)
    problems = [f"missing {f.path}" for f in info.files if f.path not in listed]
    problems += [
        f"{f.path} has {listed[f.path]} bytes, marker says {f.size}"
        for f in info.files
        if f.path in listed and listed[f.path] != f.size
    ]
    problems += [f"unexpected {p}" for p in sorted(set(listed) - {f.path for f in info.files})]
    methods: dict[str, str] = {}
    if not problems and deep:
        problems, methods = checksum_problems(storage, version_dir(root, version), info, download)
    if problems:
        if storage.read_bytes(marker_path(root, version), 0) is None:
            read_export(storage, root, version)  # pruned meanwhile: ExportNotFoundError
        raise CorruptExportError(
            f"export {info.uri} is not intact: {'; '.join(problems[:10])}; publish it again or "
            "delete it with 'cloud-exporter prune'"
        )
    return replace(info, verified_by=methods) if deep else info


def checksum_problems(
    storage: Storage, root: str, info: ExportInfo, download: bool
) -> tuple[list[str], dict[str, str]]:
    """(problems, {file: how it was checked}) comparing each file below ``root`` (the export's
    directory) with the checksums in its marker; the one home of that comparison."""
    methods: dict[str, str] = {}
    problems: list[str] = []
    stored: dict[str, str | None] = {}
    if not download:
        stored = storage.stored_checksums(root, [f.path for f in info.files if f.crc32c])
    to_read: list[FileRecord] = []
    for record in info.files:
        value = stored.get(record.path)
        if value is None and not download and _declared(storage, record):
            problems.append(f"{record.path} has no stored checksum (rewritten after commit?)")
            methods[record.path] = "listing" if storage.kind == "gcs" else "head"
        elif value is None:
            to_read.append(record)
        elif value == record.crc32c:
            methods[record.path] = "listing" if storage.kind == "gcs" else "head"
        elif storage.kind == "s3":
            # An S3 object's CRC32C is the one its writer declared or the store computed: a
            # rewrite, but also a store whose CRC32C is something else (moto without the crc32c
            # package computes CRC32 for multipart uploads). The bytes decide.
            log.warning(
                "%s: %s has stored CRC32C %s, the manifest %s; reading its bytes",
                info.uri,
                record.path,
                value,
                record.crc32c,
            )
            to_read.append(record)
        else:
            methods[record.path] = "listing"
            problems.append(f"{record.path} checksum mismatch (stored CRC32C {value})")
    missing = [r for r in to_read if stored.get(r.path) is None]
    if missing and not download and storage.kind != "other":
        log.warning(
            "%s: the store keeps no CRC32C for %d files (%s...); reading their bytes",
            info.uri,
            len(missing),
            missing[0].path,
        )

    def check(record: FileRecord) -> None:
        try:
            digests = storage.read_digests(f"{root}/{record.path}", record.sha256 is not None)
        except FileNotFoundError:
            problems.append(f"missing {record.path}")
            return
        methods[record.path] = "read"
        if not digests.matches(record):
            problems.append(f"{record.path} checksum mismatch")

    storage.run_parallel(check, to_read)
    return problems, methods


def _declared(storage: Storage, record: FileRecord) -> bool:
    """Must the store hold a CRC32C for this object? GCS computes one for every object. On S3
    only a declared checksum is kept, and adopted or foreign uploads declare none: read those."""
    return record.crc32c is not None and storage.kind == "gcs"
