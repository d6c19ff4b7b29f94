"""S3 batch deletes that hear which keys the store refused.

Part of ``storage``. DeleteObjects answers 200 even when it deleted only some of its keys: each
refused key comes back in ``Errors`` (AccessDenied from a bucket policy or object lock,
InternalError, SlowDown). s3fs's ``rm`` drops that list, so a prune could remove a version's
files but not its marker (a committed export with nothing behind it) and report success. Here
a refusal with a transient code is sent again, those keys only, under the storage's retry
policy; any other refusal raises, naming the keys. gcsfs's batch delete raises on its own;
local and memory deletes raise per file.
"""

from __future__ import annotations

import errno
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .errors import PermissionDeniedError, StorageError

if TYPE_CHECKING:
    from .storage import Storage

#: DeleteObjects error codes that mean "this key, not now": sent again.
TRANSIENT_CODES = frozenset(
    {"InternalError", "SlowDown", "ServiceUnavailable", "RequestTimeout", "OperationAborted"}
)


def delete_s3_batch(storage: Storage, paths: Sequence[str]) -> None:
    """Delete ``paths`` (one bucket, at most 1000) with DeleteObjects; missing keys count as
    deleted. Raises PermissionDeniedError or StorageError for keys the store refused."""
    real: Any = storage.real
    bucket = real.split_path(paths[0])[0]
    pending = {real.split_path(p)[1]: p for p in paths}
    refused: list[tuple[str, str, str]] = []  # (path, code, message)

    def send() -> None:
        out = _through_faults_to(
            storage,
            list(pending.values()),
            real.call_s3,
            "delete_objects",
            Bucket=bucket,
            Delete={"Objects": [{"Key": key} for key in pending], "Quiet": True},
        )
        for path in pending.values():
            real.invalidate_cache(path)
        again = {}
        for error in (out or {}).get("Errors") or []:
            key, code = error.get("Key", ""), error.get("Code", "")
            if key not in pending:
                continue
            if code in TRANSIENT_CODES:
                again[key] = pending[key]
            else:
                refused.append((pending[key], code, error.get("Message", "")))
        pending.clear()
        pending.update(again)
        if again:  # EBUSY: retried like a 503 (retry.is_transient)
            raise OSError(errno.EBUSY, f"the store put off deleting {len(again)} objects")

    storage._call("delete", paths[0], send)
    if refused:
        raise _refusal(storage, refused)


def _through_faults_to(storage: Storage, paths: list[str], fn: Any, *args: Any, **kw: Any) -> Any:
    via = getattr(storage.fs, "backend_call", None)
    return fn(*args, **kw) if via is None else via("rm", paths, fn, *args, targets=paths, **kw)


def _refusal(storage: Storage, refused: list[tuple[str, str, str]]) -> StorageError:
    named = ", ".join(storage.uri(path) for path, _, _ in refused[:3])
    more = f" and {len(refused) - 3} more" if len(refused) > 3 else ""
    codes = sorted({code for _, code, _ in refused})
    if "AccessDenied" in codes:
        return PermissionDeniedError(
            f"permission denied to delete {named}{more}: the store refused them one by one "
            "(a bucket policy, object lock or missing s3:DeleteObject on the export prefix); "
            "grant the delete (see terraform/) and run again"
        )
    return StorageError(
        f"the store refused to delete {named}{more} ({', '.join(codes)}: {refused[0][2]}); "
        "the other objects of the request were deleted: run again"
    )
