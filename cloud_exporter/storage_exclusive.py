"""Does an S3 endpoint keep create-only writes exclusive? Asked once per endpoint and bucket.

Claims, markers and prune journals are written with ``If-None-Match: *``: the store refuses the
write when the key exists, and that refusal is what makes a version one writer's. S3 honours the
header (since 2024); some S3-compatible stores accept it and overwrite anyway, which would let
two writers claim one version and the loser's clean-up damage the winner's export. So the first
create-only write a process makes to a bucket is sent a second time: an honest store refuses it
(one extra request per bucket and process); a store that accepts it and a third one gets a
``StorageError`` naming the problem, before anything is published there. GCS's
``ifGenerationMatch=0``, local disk and memory need no such check.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .errors import StorageError

if TYPE_CHECKING:
    from .storage import Storage

log = logging.getLogger(__name__)

#: (endpoint, bucket URI) -> whether a second create of an existing key was refused.
S3_CREATES_EXCLUSIVE: dict[tuple[str, str], bool] = {}
_lock = threading.Lock()


def _key(storage: Storage, path: str) -> tuple[str, str]:
    real: Any = storage.real
    endpoint = getattr(real, "endpoint_url", None) or (
        getattr(real, "client_kwargs", None) or {}
    ).get("endpoint_url", "")
    return str(endpoint or ""), storage.uri(path.split("/", 1)[0])


def _refusal(storage: Storage, path: str) -> StorageError:
    bucket = _key(storage, path)[1]
    return StorageError(
        f"{bucket} accepted a second create-only write of {storage.uri(path)}: this S3 endpoint "
        "ignores If-None-Match, so versions cannot be reserved for one writer and two "
        "publishers could overwrite each other's export; use a store that honours conditional "
        "writes (S3 does)"
    )


def refuse_known_overwriter(storage: Storage, path: str) -> None:
    """Raise before a create-only write to a bucket already found to ignore If-None-Match."""
    if storage.kind == "s3" and S3_CREATES_EXCLUSIVE.get(_key(storage, path)) is False:
        raise _refusal(storage, path)


def confirm_exclusive(storage: Storage, path: str, create_again: Callable[[], None]) -> None:
    """After the first successful create-only write of ``path`` to its bucket: send it again
    and require a refusal. ``create_again`` raises FileExistsError when refused."""
    if storage.kind != "s3":
        return
    key = _key(storage, path)
    with _lock:
        if key not in S3_CREATES_EXCLUSIVE:
            try:
                # Twice: one accepted repeat may only mean that someone deleted the object in
                # between (a prune with no grace); two in a row mean the store overwrites.
                for _ in range(2):
                    try:
                        create_again()
                    except FileExistsError:
                        S3_CREATES_EXCLUSIVE[key] = True
                        break
                else:
                    S3_CREATES_EXCLUSIVE[key] = False
            except StorageError:  # unknown: ask again on the next create
                return
    if not S3_CREATES_EXCLUSIVE[key]:
        try:
            storage.delete_one(path)  # ours, written twice; nothing else can rely on it
        except StorageError as exc:
            log.warning("could not remove %s (%s); prune removes it later", storage.uri(path), exc)
        raise _refusal(storage, path)
