"""``publish``: validate, claim a version, commit it with a strategy (which cleans up after
itself), optionally prune."""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from . import storage_checksums
from ._version import __version__
from .commit import Plan, choose_strategy
from .errors import InvalidArgumentError, TransientStorageError, VersionConflictError
from .layout import MAX_VERSION, claim_path, marker_path, parse_version
from .marker import CHECKSUMS, ExportInfo, check_metadata, parse_marker
from .retry import DEFAULT_RETRY, RetryPolicy
from .source import Digests, SourceFile, read_hashed, scan_source
from .storage import Storage, resolve

log = logging.getLogger(__name__)

MODES = ("staged", "direct")
_MAX_BUMPS = 1000
READ_AHEAD_BYTES = 32 << 20  # at most this many bytes of small files are read during the claim
# The last automatic version this process claimed per base URI: the next guess starts above it,
# so a publisher that publishes more than once a second needs no second claim round.
_last_claimed: dict[str, int] = {}
# Per base URI: did this process's last automatic claim hold at its first guess? If not (another
# host's clock ahead, say), the next publish does not stage before its claim is decided.
_first_guess_held: dict[str, bool] = {}


def publish(
    source_dir: str | os.PathLike[str],
    base: str,
    *,
    version: int | None = None,
    assets_extra: Mapping[str, str] | None = None,
    metadata: dict[str, Any] | None = None,
    mode: str = "staged",
    keep: int | None = None,
    filesystem: Any = None,
    storage_options: dict[str, Any] | None = None,
    retry: RetryPolicy = DEFAULT_RETRY,
    concurrency: int = 8,
    progress: Callable[[int], None] | None = None,
    resume: bool = True,
    checksum: str = "crc32c",
    on_total: Callable[[int], None] | None = None,
) -> ExportInfo:
    """Publish the SavedModel in ``source_dir`` as a new version under ``base``, atomically.

    The export becomes visible only when its marker is written; a failure at any step leaves no
    visible export. ``keep`` prunes to the newest N afterwards (see ``prune``). ``progress`` is
    called with the byte count of each file once it is transferred; ``on_total`` once with the
    bytes to transfer, after the source is checked and before any upload. ``checksum``: "crc32c"
    (default) records each file's CRC32C, which the stores check on upload and keep;
    "sha256" records SHA-256 as well. ``resume`` (staged mode) reuses staged objects an
    interrupted publish proved identical (see docs/async.md).
    """
    if mode not in MODES:
        raise InvalidArgumentError(f"mode must be one of {MODES}, got {mode!r}")
    check_version(version)
    if checksum not in CHECKSUMS:
        raise InvalidArgumentError(f"checksum must be one of {CHECKSUMS}, got {checksum!r}")
    if keep is not None:
        from .policies import check_keep

        check_keep(keep)
    files = scan_source(source_dir, assets_extra)
    meta = check_metadata(metadata)
    if on_total is not None:
        on_total(sum(f.size for f in files))
    fs, root = resolve(base, filesystem, storage_options)
    storage = Storage(fs, retry, concurrency)
    writer_id = f"w{os.getpid()}-{uuid.uuid4().hex[:12]}"
    strategy = choose_strategy(storage, mode)
    read: dict[str, tuple[bytes, Digests]] = {}
    looked: dict[str, Any] = {}

    def look() -> None:  # the staging area's listing does not depend on the version
        from .resume import Session

        looked["session"] = Session(storage, root, files)

    def read_now() -> None:  # S3/GCS: while the version is claimed, not after
        read.update(read_ahead(files, checksum == "sha256"))

    def make_plan(v: int) -> Plan:
        plan = Plan(
            storage, root, v, files, writer_id, meta, time.time(), __version__, progress, checksum
        )
        plan.resume, plan.read_ahead = looked.get("session"), read
        return plan

    staged = strategy.name == "staged"
    beside = [look] if resume and staged else []
    if storage.kind in ("s3", "gcs"):
        beside.append(read_now)
    stage = None
    if staged and version is None and _first_guess_held.get(storage.uri(root), True):
        stage = StageWhileDeciding(strategy, make_plan)
    claimed = claim_version(storage, root, version, writer_id, beside=beside, stage=stage)
    plan = stage.plan if stage is not None and stage.plan is not None else make_plan(claimed)
    log.info("publishing %s as %s (%s)", source_dir, storage.uri(plan.target), strategy.name)
    try:
        if stage is not None and stage.error is not None:
            raise stage.error
        strategy.commit(plan)
    except BaseException as exc:
        # Storage still failing past the retry budget: keep the staged uploads to resume from.
        keep_staged = plan.resume is not None and isinstance(exc, TransientStorageError)
        strategy.abort(plan, keep_staged)
        raise
    strategy.cleanup(plan)
    info = parse_marker(plan.marker_bytes(), claimed, storage.uri(plan.target))
    log.info("committed %s (%d files, %d bytes)", info.uri, len(info.files), info.total_size)
    if keep is not None:  # on this publish's storage; the new marker's time is the store clock
        from .policies import build_policies
        from .retention import prune_in

        prune_in(storage, root, build_policies(keep, None, None, ()), committed=info)
    return info


def read_ahead(files: list[SourceFile], sha256: bool) -> dict[str, tuple[bytes, Digests]]:
    """{relpath: (bytes, checksums)} of the largest files that go in one request, up to
    READ_AHEAD_BYTES in all, read in one pass while the version is claimed: their uploads
    then start at once, sending the bytes hashed. A file that cannot be read is left to its
    upload, which reports it."""
    out: dict[str, tuple[bytes, Digests]] = {}
    room = READ_AHEAD_BYTES
    for f in sorted(files, key=lambda f: -f.size):
        if f.size > min(room, storage_checksums.SINGLE_REQUEST_MAX):
            continue
        try:
            out[f.relpath] = read_hashed(f.local_path, sha256)
        except OSError:
            continue
        room -= f.size
    return out


def check_version(version: object) -> None:
    if version is None:
        return
    if not isinstance(version, int) or isinstance(version, bool):
        raise InvalidArgumentError(f"version must be an int, got {version!r}")
    if not 0 <= version < MAX_VERSION:
        raise InvalidArgumentError(
            f"version must be in [0, {MAX_VERSION - 1}], got {version}: TF Serving reads versions "
            "as int64, and the next automatic version must still fit; pick a smaller version "
            "(automatic versions are Unix seconds) or omit it"
        )


class StageWhileDeciding:
    """Staged mode, automatic version: upload to the claimed version's staging while the read
    and the listing that decide the claim are in flight, one round trip off every publish.

    Safe because staging uploads touch only this writer's own staging directory, under a claim
    that already exists (prune treats both as in flight). If the claim is lost (the version
    exists, or a newer one does), no further upload starts, the staged objects are removed
    before the claim is (``undo``), and the next claim round runs without staging."""

    def __init__(self, strategy: Any, make_plan: Callable[[int], Plan]) -> None:
        self.strategy, self.make_plan = strategy, make_plan
        self.plan: Plan | None = None
        self.error: BaseException | None = None  # raised by publish if the claim holds
        self._lost = self._held = False
        self._report: Callable[[int], None] | None = None  # the caller's progress callback
        self._pending: list[int] = []  # files staged before the claim held: reported once it does
        self._lock = threading.Lock()

    def start(self, version: int) -> None:
        """Beside the decision: stage the files (an error is kept for publish to raise).
        Progress is held back until the claim holds: a lost claim's bytes are never reported."""
        with self._lock:
            if self._lost:  # memory://: the decision ran first
                return
            self.plan = plan = self.make_plan(version)
            self._report = plan.on_file
            if plan.on_file is not None and not self._held:
                plan.on_file = self._hold
        try:
            self.strategy.stage(plan)
        except BaseException as exc:
            self.error = exc

    def _hold(self, size: int) -> None:
        with self._lock:
            if not self._held:
                self._pending.append(size)
                return
        if self._report is not None:
            self._report(size)

    def keep(self) -> None:
        """The claim holds: report each file staged so far, and everything from now on."""
        with self._lock:
            self._held = True
            pending, self._pending = self._pending, []
            if self.plan is not None:
                self.plan.on_file = self._report
        for size in pending if self._report is not None else ():
            self._report(size)

    def lose(self) -> None:
        """The claim does not hold: start no more uploads."""
        with self._lock:
            self._lost = True
            if self.plan is not None:
                self.plan.cancelled = True

    def undo(self) -> None:
        """Remove what was staged, then the claim (the strategy's abort)."""
        if self.plan is not None:
            self.strategy.abort(self.plan)
        self.plan, self.error = None, None


def claim_version(
    storage: Storage,
    base: str,
    requested: int | None,
    writer_id: str,
    *,
    beside: Sequence[Callable[[], None]] = (),
    stage: StageWhileDeciding | None = None,
) -> int:
    """Reserve a version with a create-only claim object.

    An explicit version must not exist now. An automatic version must also be higher than every
    version directory listed once the claim exists: a number that was committed and pruned is
    never handed out again, however stale the guess that led to it (another process's clock,
    a walk through numbers others took meanwhile). ``beside`` runs with the first claim's
    create; ``stage`` (automatic versions only) with the first claim's decision.
    """
    if requested is not None:
        if _try_claim(storage, base, requested, writer_id, newest=False, beside=beside) is not None:
            raise VersionConflictError(
                f"version {requested} already exists or is being published under "
                f"{storage.uri(base)}; choose another version or omit it"
            )
        return requested
    # No listing before the claim: the one after it decides, and bumps a stale guess.
    uri = storage.uri(base)
    candidate = max(int(time.time()), _last_claimed.get(uri, -1) + 1)
    for attempt in range(_MAX_BUMPS):
        if candidate > MAX_VERSION:
            raise VersionConflictError(
                f"no automatic version is left under {uri}: the next one would be "
                f"{candidate}, beyond int64 ({MAX_VERSION}), which TF Serving cannot read; "
                "publish to a new base, or delete or renumber the highest versions"
            )
        first = attempt == 0
        retry_at = _try_claim(
            storage,
            base,
            candidate,
            writer_id,
            newest=True,
            beside=beside if first else (),
            stage=stage if first else None,
        )
        if retry_at is None:
            _last_claimed[uri], _first_guess_held[uri] = candidate, first
            return candidate
        candidate = retry_at
    raise VersionConflictError(f"no free version found near {candidate} under {uri}")


def _try_claim(
    storage: Storage,
    base: str,
    version: int,
    writer_id: str,
    *,
    newest: bool,
    beside: Sequence[Callable[[], None]] = (),
    stage: StageWhileDeciding | None = None,
) -> int | None:
    """Claim ``version``: None when it is ours now, else the next candidate to try.

    The listing that decides comes after the claim exists, so any version committed before the
    claim (and any kept one above it) is seen. With ``newest`` the version must top them all.
    """
    claim, mine = claim_path(base, version), writer_id.encode()
    created: list[bool] = []
    try:
        storage.together(
            lambda: created.append(storage.create_exclusive(claim, mine, durable=False)), *beside
        )
    except BaseException:
        if created and created[0]:  # ours, and nothing is written under it yet
            _drop_claim(storage, claim)
        raise
    if not created[0] and storage.read_bytes(claim, 256) != mine:
        return version + 1  # another writer's claim (ours, when a retried create lost its answer)
    found: dict[str, Any] = {}

    def look(what: str) -> None:
        if what == "marker":  # a read decides, not a listing
            found[what] = storage.read_bytes(marker_path(base, version), 0) is not None
        else:
            found[what] = _listed_versions(storage, base)

    def decide() -> None:  # both after the claim exists, independent of each other: together
        try:
            storage.together(lambda: look("marker"), lambda: look("listing"))
        except BaseException:
            if stage is not None:  # no more uploads under a claim that may be dropped
                stage.lose()
            raise
        highest = max(found["listing"], default=-1)
        taken = found["marker"] or version in found["listing"]
        found["holds"] = not taken and not (newest and highest > version)
        found["next"] = max(version, highest) + 1
        if stage is not None and found["holds"]:
            stage.keep()
        elif stage is not None:
            stage.lose()

    try:
        if stage is None:
            decide()
        else:
            storage.together(decide, lambda: stage.start(version))
    except BaseException:
        if stage is not None:  # its uploads, then the claim
            stage.undo()
        raise
    if found["holds"]:
        return None
    if stage is not None:
        stage.undo()  # the staged objects, then the claim (claims go after commit)
    else:
        storage.delete_one(claim)  # the version exists, or a newer one does
    return found["next"]


def _drop_claim(storage: Storage, claim: str) -> None:
    try:
        storage.delete_one(claim)
    except Exception as exc:
        log.warning("could not remove the claim (%s); prune removes it later", exc)


def _listed_versions(storage: Storage, base: str) -> set[int]:
    """Version directory names directly below ``base``, from a fresh listing."""
    return {v for v in map(parse_version, storage.list_children(base)) if v is not None}
