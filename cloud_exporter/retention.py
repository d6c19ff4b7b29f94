"""``prune``: delete all but the exports the policies keep, and clean up after crashed publishes.

Deletion order, for every doomed export (batched across exports, ~1000 keys a request on S3):
1. its marker: from here on the export does not exist for list/latest/verify;
2. saved_model.pb/.pbtxt: TF Serving can no longer load the directory;
3. every other file.

Safety rules: decisions rest on a fresh listing plus the markers read back just now (a stale
listing entry whose marker is gone is not counted as kept); an export the listing does not show
is never touched; deletes that find nothing count as done; orphans (staging, claims, unmarked
version directories of our crashed publishes, stock ``temp-*`` dirs) are removed only when every
object in them is older than ``grace_seconds`` by the store's own clock (a probe object's
modification time), never by this machine's clock, which may be hours off.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import (
    InvalidArgumentError,
    PermissionDeniedError,
    PruneIncompleteError,
    StorageError,
)
from .exports import BaseListing, list_base, scan_base
from .layout import (
    CLAIM_SUFFIX,
    MARKER_NAME,
    STAGING_DIRNAME,
    STOCK_TEMP_PREFIX,
    is_saved_model_file,
    join,
    marker_path,
    parse_version,
    version_dir,
)
from .marker import ExportInfo
from .policies import KeepBest, RetentionPolicy, build_policies, select_kept
from .retry import DEFAULT_RETRY, RetryPolicy
from .storage import CLOCK_PROBE_PREFIX, Entry, Storage, resolve
from .untrusted import load_json

log = logging.getLogger(__name__)
_STAGED_NAME = re.compile(r"^(0|[1-9][0-9]{0,18})(?:\.claim$|-)")
_JOURNAL_NAME = re.compile(r"^prune-[0-9]+-[0-9a-f]+\.json$")
_JOURNAL_FORMAT = "cloud-exporter-prune-journal"
_MAX_JOURNAL_BYTES = 1 << 20
UNMARKED_REASON = "no marker (never committed, or its marker was deleted): left alone"


@dataclass
class PruneReport:
    """What a prune kept, deleted, skipped and cleaned (or would, with ``dry_run``)."""

    base: str
    dry_run: bool = False
    kept: dict[int, list[str]] = field(default_factory=dict)
    deleted: list[int] = field(default_factory=list)
    skipped: dict[int, str] = field(default_factory=dict)
    orphans_removed: list[str] = field(default_factory=list)
    orphans_waiting: list[str] = field(default_factory=list)
    remaining: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Orphan:
    """A group of leftover objects that is removed (or kept) as a whole."""

    name: str
    first: list[str] = field(default_factory=list)  # version-dir files, saved_model.pb first
    rest: list[str] = field(default_factory=list)  # staging files
    claim: str | None = None  # deleted last: it keeps the version reserved until then
    newest: float = 0.0
    dirs: list[str] = field(default_factory=list)  # local disk: also remove these once empty

    def add(self, path: str, entry: Entry, bucket: list[str]) -> None:
        bucket.append(path)
        self.touch(entry)

    def touch(self, entry: Entry) -> None:
        """An object without a modification time makes the group young forever."""
        self.newest = max(self.newest, math.inf if entry.mtime is None else entry.mtime)


def prune(
    base: str,
    keep: int | None = 5,
    *,
    keep_every_hours: float | None = None,
    keep_best: tuple[str, str, int] | KeepBest | None = None,
    pinned: Iterable[int] = (),
    grace_seconds: float = 3600,
    dry_run: bool = False,
    filesystem: Any = None,
    storage_options: dict[str, Any] | None = None,
    retry: RetryPolicy = DEFAULT_RETRY,
    committed: ExportInfo | None = None,
) -> PruneReport:
    """Delete committed exports no policy keeps, then orphans older than ``grace_seconds``.

    Idempotent: a prune that raises PruneIncompleteError leaves a state that running it again
    finishes. ``dry_run`` mutates nothing and reports exactly what a real run would delete.
    ``committed``: the export a publish to ``base`` returned just now; the time the listing
    shows for its marker stands in for the store's clock (no probe object is written).
    """
    policies = build_policies(keep, keep_every_hours, keep_best, pinned)
    check_grace(grace_seconds)
    fs, root = resolve(base, filesystem, storage_options)
    return prune_in(Storage(fs, retry), root, policies, grace_seconds, dry_run, committed)[0]


def check_grace(grace_seconds: object) -> None:
    if not isinstance(grace_seconds, (int, float)) or not grace_seconds >= 0:
        raise InvalidArgumentError(
            f"grace_seconds must be a number >= 0 (seconds an orphan waits), got {grace_seconds!r}"
        )


def prune_in(
    storage: Storage,
    root: str,
    policies: list[RetentionPolicy],
    grace_seconds: float = 3600,
    dry_run: bool = False,
    committed: ExportInfo | None = None,
) -> tuple[PruneReport, BaseListing]:
    """``prune`` on a resolved ``storage`` (a publish hands over its own); also returns the
    listing the decisions rest on, for a caller that would otherwise list the base again."""
    report = PruneReport(base=storage.uri(root), dry_run=dry_run)
    listing, exports, invalid = scan_base(storage, root)
    report.skipped.update(invalid)
    report.kept = select_kept(policies, exports)
    doomed = [e.version for e in exports if e.version not in report.kept]
    journals = _read_journals(storage, root, listing)
    orphans = _find_orphans(storage, root, listing, {e.version for e in exports}, invalid, journals)
    # The store's clock when there is something to age (dry runs write nothing: local clock).
    if not orphans:
        now = 0.0
    elif dry_run:
        now = time.time()
    else:
        now = _committed_time(storage, root, listing, committed)
        now = storage.store_now(join(root, STAGING_DIRNAME)) if now is None else now
    ripe = [o for o in orphans if now - o.newest >= grace_seconds]
    report.orphans_waiting = [o.name for o in orphans if now - o.newest < grace_seconds]
    report.deleted = doomed
    report.orphans_removed = [o.name for o in ripe]
    ours = {_version_of(o.name) for o in orphans}
    for version, files in listing.versions.items():
        if MARKER_NAME not in files and version not in ours:
            report.skipped[version] = UNMARKED_REASON
    if dry_run:
        return report, listing
    try:
        journal = _journal_path(root) if doomed else None
        if journal:  # names the doomed versions as ours, should this prune stop half way
            storage.create_exclusive(journal, _journal_bytes(doomed))
        _delete_exports(storage, root, listing, doomed)
        _delete_orphans(storage, root, ripe)
        if journal:  # done: a journal the next prune finds is a crashed prune's
            storage.delete_one(journal)
        storage.remove_dir_if_empty(join(root, STAGING_DIRNAME))
    except PermissionDeniedError:
        raise  # running prune again cannot help: the credentials lack a permission
    except StorageError as exc:
        report.remaining = _still_there(storage, root, doomed)
        raise PruneIncompleteError(
            f"prune of {report.base} stopped ({exc}); {len(report.remaining)} objects remain: "
            "run prune again to finish",
            report,
        ) from exc
    log.info("pruned %s: deleted %s, kept %s", report.base, doomed, sorted(report.kept))
    return report, listing


def _committed_time(
    storage: Storage, root: str, listing: BaseListing, committed: ExportInfo | None
) -> float | None:
    """The store's time of the marker ``committed`` wrote, as this listing shows it: a clock
    reading of the store taken moments ago (so orphans look, if anything, younger)."""
    if committed is None or committed.uri != storage.uri(version_dir(root, committed.version)):
        return None
    entry = listing.versions.get(committed.version, {}).get(MARKER_NAME)
    return None if entry is None else entry.mtime


def _delete_exports(storage: Storage, base: str, listing: BaseListing, doomed: list[int]) -> None:
    if not doomed:
        return
    markers, models, rest = [], [], []
    for version in doomed:  # linear in the objects listed: prune cost grows with E, not E**2
        vdir = version_dir(base, version)
        markers.append(marker_path(base, version))  # listed or not (a lagging listing)
        for relpath in listing.versions.get(version, {}):
            path = join(vdir, relpath)
            if is_saved_model_file(relpath):
                models.append(path)
            elif relpath != MARKER_NAME:
                rest.append(path)
    for phase in (markers, models, rest):
        storage.delete(phase)
    if storage.exact_listings:  # local disk: the listing showed every file there was
        leftovers = []
    else:
        leftovers = _still_there(storage, base, doomed, skip_republished=True)
    if leftovers:  # a lagging listing hid them the first time: delete again
        storage.delete(leftovers)
    for version in doomed:
        storage.remove_empty_dirs(version_dir(base, version))


def _still_there(
    storage: Storage, base: str, versions: list[int], *, skip_republished: bool = False
) -> list[str]:
    """Objects of ``versions`` that one fresh listing of the base still shows. With
    ``skip_republished``, leave out a version that someone is publishing again (under an
    explicit number): the listing shows its claim, staging uploads or a new marker."""
    listing = list_base(storage, base)
    wanted = set(versions) & set(listing.versions)
    if skip_republished:
        wanted -= staged_versions(listing) | set(listing.marked())
    return [
        join(version_dir(base, v), relpath)
        for v in sorted(wanted)
        for relpath in listing.versions[v]
    ]


def busy_versions(storage: Storage, base: str, listing: BaseListing) -> set[int]:
    """Versions a publish or prune of ours has in flight (or left by a crash): named by a claim,
    a staging upload or a prune journal. Nothing else may commit or delete them."""
    busy = staged_versions(listing)
    for versions in _read_journals(storage, base, listing).values():
        busy |= versions
    return busy


def staged_versions(listing: BaseListing) -> set[int]:
    """Versions that a claim or staging upload in the listing names (publishes in flight, or
    crashed ones prune has not cleaned up yet)."""
    found = {_staged_version(entry.relpath) for entry in listing.others}
    return {v for v in found if v is not None}


def _staged_version(relpath: str) -> int | None:
    """The version a claim or staging upload (``<staging>/<v>.claim``, ``<staging>/<v>-…``)
    is for; None for anything else."""
    head, _, rest = relpath.partition("/")
    match = _STAGED_NAME.match(rest.split("/", 1)[0]) if head == STAGING_DIRNAME else None
    return parse_version(match.group(1)) if match else None


def _find_orphans(
    storage: Storage,
    base: str,
    listing: BaseListing,
    committed: set[int],
    invalid: dict[int, str],
    journals: dict[str, set[int]],
) -> list[_Orphan]:
    """Group leftovers by what created them: one group per version, per stock temp dir."""
    groups: dict[str, _Orphan] = {}
    staged_versions: set[int] = set()
    for entry in listing.others:
        head, _, rest = entry.relpath.partition("/")
        path = join(base, entry.relpath)
        version = _staged_version(entry.relpath)
        if version is not None:
            staged_versions.add(version)
            group = groups.setdefault(
                str(version), _Orphan(storage.uri(version_dir(base, version)))
            )
            if rest.endswith(CLAIM_SUFFIX) and "/" not in rest:
                group.claim = path
                group.touch(entry)
            else:
                group.add(path, entry, group.rest)
        elif head.startswith(STOCK_TEMP_PREFIX) and head[len(STOCK_TEMP_PREFIX) :].isdigit():
            group = groups.setdefault(head, _Orphan(storage.uri(join(base, head))))
            group.add(path, entry, group.rest)
        elif head == STAGING_DIRNAME and rest.startswith(CLOCK_PROBE_PREFIX) and "/" not in rest:
            group = groups.setdefault(path, _Orphan(storage.uri(path)))  # a died prune's probe
            group.add(path, entry, group.rest)
    for path, versions in journals.items():
        if not versions & set(listing.versions):  # its prune finished: the journal can go
            dirs = [version_dir(base, v) for v in sorted(versions)]  # a crash may leave them
            groups[path] = _Orphan(storage.uri(path), rest=[path], dirs=dirs)
    journal_times = {join(base, e.relpath): e.mtime for e in listing.others}
    for version, files in listing.versions.items():
        if version in committed or version in invalid:
            continue
        remnant = _is_remnant(version, files, journals, journal_times)
        if version not in staged_versions and not remnant:
            continue  # not ours: no claim, staging or prune journal of ours names it
        group = groups.setdefault(str(version), _Orphan(storage.uri(version_dir(base, version))))
        ordered = sorted(files, key=lambda rel: (not is_saved_model_file(rel), rel))
        for relpath in ordered:
            group.add(join(version_dir(base, version), relpath), files[relpath], group.first)
        if remnant and version not in staged_versions:
            group.newest = 0.0  # remnants of an export a prune decided to delete; not in flight
    return list(groups.values())


def _is_remnant(
    version: int,
    files: dict[str, Entry],
    journals: dict[str, set[int]],
    journal_times: dict[str, float | None],
) -> bool:
    """Left behind by a prune that deleted ``version``: a journal names it and no object in the
    directory is newer than that journal (one written later under the number is not ours)."""
    times = [e.mtime for e in files.values()]
    if not times or None in times:
        return False
    newest = max(t for t in times if t is not None)
    return any(
        version in versions and (journal_times.get(path) or 0.0) >= newest
        for path, versions in journals.items()
    )


def _journal_path(base: str) -> str:
    return join(base, STAGING_DIRNAME, f"prune-{int(time.time())}-{uuid.uuid4().hex[:12]}.json")


def _journal_bytes(versions: list[int]) -> bytes:
    return json.dumps({"format": _JOURNAL_FORMAT, "versions": versions}).encode()


def _read_journals(storage: Storage, base: str, listing: BaseListing) -> dict[str, set[int]]:
    """{journal path: versions} for every valid prune journal in staging."""
    journals: dict[str, set[int]] = {}
    prefix = STAGING_DIRNAME + "/"
    for entry in listing.others:
        name = entry.relpath[len(prefix) :] if entry.relpath.startswith(prefix) else ""
        if not _JOURNAL_NAME.match(name):
            continue
        path = join(base, entry.relpath)
        data = storage.read_bytes(path, _MAX_JOURNAL_BYTES)
        if data is None:  # its prune finished and deleted it after the listing
            continue
        try:
            doc = load_json(data, _MAX_JOURNAL_BYTES)
            if not isinstance(doc, dict):
                raise ValueError("not an object")
            versions = doc["versions"] if doc.get("format") == _JOURNAL_FORMAT else None
            if not isinstance(versions, list) or not all(
                isinstance(v, int) and not isinstance(v, bool) for v in versions
            ):
                raise ValueError("bad versions")
        except (ValueError, KeyError, AttributeError, TypeError):
            log.warning("ignoring invalid prune journal %s", storage.uri(path))
            continue
        journals[path] = set(versions)
    return journals


def _version_of(name: str) -> int | None:
    return parse_version(name.rstrip("/").rsplit("/", 1)[-1])


def _delete_orphans(storage: Storage, base: str, orphans: list[_Orphan]) -> None:
    """Version-dir files (saved_model.pb first), then staging, then the claim."""
    by_phase: dict[int, list[str]] = defaultdict(list)
    for orphan in orphans:
        version = _version_of(orphan.name)
        if orphan.first and version is not None:
            if storage.read_bytes(marker_path(base, version), 0) is not None:
                continue  # committed since the listing: not an orphan after all
            by_phase[0] += orphan.first[:1]
            by_phase[1] += orphan.first[1:]
        by_phase[2] += orphan.rest
        if orphan.claim:
            by_phase[3].append(orphan.claim)
    for phase in sorted(by_phase):
        storage.delete(by_phase[phase])
    if storage.is_local:
        _remove_emptied_dirs(storage, base, orphans)


def _remove_emptied_dirs(storage: Storage, base: str, orphans: list[_Orphan]) -> None:
    """Local disk: remove the directories the orphans occupied, and nothing in flight."""
    tops = {join(base, p[len(base) + 1 :].split("/")[0]) for o in orphans for p in o.first}
    tops.update(d for o in orphans for d in o.dirs)
    staging = join(base, STAGING_DIRNAME)
    for orphan in orphans:
        for path in orphan.rest:
            rel = path[len(base) + 1 :].split("/")
            tops.add(join(staging, rel[1]) if rel[0] == STAGING_DIRNAME else join(base, rel[0]))
    for top in sorted(tops):
        storage.remove_empty_dirs(top)
    storage.remove_dir_if_empty(staging)
