"""Which storage errors are worth retrying (and which mean "permission denied" or "empty
range"), and the retry policy as a value.

Every call to a backend goes through ``RetryPolicy.call``, which retries transient errors. The
other loops each retry one specific answer, a bounded number of times: ``Storage.upload_hashed``
sends an upload the store rejected for its checksum again, ``Storage.copy`` retries a copy once
after dropping a stale listing, the local create-only write recreates a parent a concurrent
prune removed; ``sync.watch`` polls on purpose, with its own backoff.
"""

from __future__ import annotations

import asyncio
import errno
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import tenacity

from .errors import InvalidArgumentError, TransientStorageError

log = logging.getLogger(__name__)
T = TypeVar("T")

# errno values that s3fs and the OS use for throttling, 5xx answers and broken connections.
_TRANSIENT_ERRNOS = frozenset(
    {
        errno.EBUSY,  # s3fs: 503 SlowDown, ServiceUnavailable, 409 OperationAborted
        getattr(errno, "EREMOTEIO", errno.EIO),  # s3fs: 500 InternalError
        errno.EAGAIN,
        errno.ETIMEDOUT,
        errno.ECONNRESET,
        errno.ECONNABORTED,
        errno.ECONNREFUSED,
        errno.EPIPE,
    }
)
# Exception class names from HTTP stacks (aiohttp, botocore, google-auth) that mean "try again".
_TRANSIENT_NAMES = frozenset(
    {
        "ServerDisconnectedError",
        "ClientConnectionError",
        "ClientConnectorError",
        "ClientOSError",
        "ClientPayloadError",
        "ServerTimeoutError",
        "EndpointConnectionError",
        "ConnectionClosedError",
        "ReadTimeoutError",
        "ConnectTimeoutError",
        "ResponseStreamingError",
        "TransportError",
    }
)
_TRANSIENT_HTTP_CODES = frozenset({408, 429, 500, 502, 503, 504})
# S3 error codes that s3fs turns into a plain EIO OSError, yet mean "try again": a conditional
# write racing another one on the same key answers 409 ConditionalRequestConflict, and the
# retry then learns who won (412 for us, or our create goes through).
_TRANSIENT_S3_CODES = frozenset({"ConditionalRequestConflict"})


def is_transient(exc: BaseException) -> bool:
    """True when retrying the same call may succeed (throttling, 5xx, resets, timeouts)."""
    if isinstance(exc, (FileExistsError, FileNotFoundError, PermissionError)):
        return False
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError, ConnectionError)):
        return True
    if isinstance(exc, OSError) and exc.errno in _TRANSIENT_ERRNOS:
        return True
    if any(cls.__name__ in _TRANSIENT_NAMES for cls in type(exc).__mro__):
        return True
    response = getattr(exc, "response", None)  # botocore's ClientError, s3fs's cause
    if isinstance(response, dict) and response.get("Error", {}).get("Code") in _TRANSIENT_S3_CODES:
        return True
    code = getattr(exc, "code", None)  # gcsfs HttpError carries the HTTP status here
    if isinstance(code, int) and code in _TRANSIENT_HTTP_CODES:
        return True
    cause = exc.__cause__
    return cause is not None and cause is not exc and is_transient(cause)


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded exponential backoff with full jitter for transient storage errors.

    ``max_attempts`` and ``deadline_seconds`` both bound a single operation; permanent errors
    are raised at once. Policies are plain values: ``RetryPolicy(max_attempts=3)``.
    """

    max_attempts: int = 8
    initial_wait: float = 0.1
    max_wait: float = 8.0
    deadline_seconds: float = 120.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise InvalidArgumentError("RetryPolicy.max_attempts must be >= 1")
        if self.initial_wait < 0 or self.max_wait < 0 or self.deadline_seconds <= 0:
            raise InvalidArgumentError("RetryPolicy waits must be >= 0 and deadline_seconds > 0")

    def call(self, what: str, fn: Callable[..., T], *args: object, **kwargs: object) -> T:
        """Run ``fn(*args, **kwargs)``, retrying transient errors; ``what`` names it in logs."""
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.max_attempts)
            | tenacity.stop_after_delay(self.deadline_seconds),
            wait=tenacity.wait_random_exponential(multiplier=self.initial_wait, max=self.max_wait),
            retry=tenacity.retry_if_exception(is_transient),
            before_sleep=lambda state: _log_retry(what, state),
            reraise=True,
        )
        try:
            return retrying(fn, *args, **kwargs)
        except Exception as exc:
            if is_transient(exc):
                raise TransientStorageError(
                    f"{what}: still failing after {self.max_attempts} attempts or "
                    f"{self.deadline_seconds:g} s ({type(exc).__name__}: {exc}); the storage "
                    "service is throttling or unreachable: run again later, or raise the "
                    "RetryPolicy bounds"
                ) from exc
            raise


DEFAULT_RETRY = RetryPolicy()


def _log_retry(what: str, state: tenacity.RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    wait = state.next_action.sleep if state.next_action else 0.0
    log.warning(
        "%s: transient %s (attempt %d), retrying in %.2f s",
        what,
        type(exc).__name__,
        state.attempt_number,
        wait,
    )


def is_permission_denied(exc: OSError) -> bool:
    """PermissionError (s3fs for 403 AccessDenied, the OS for EACCES), or the plain OSError
    that gcsfs raises for an HTTP 403 (its message starts with "Forbidden:")."""
    return isinstance(exc, PermissionError) or (
        type(exc) is OSError and str(exc).startswith("Forbidden:")
    )


# Errors of the HTTP stacks below fsspec that are not OSErrors (gcsfs, botocore).
BACKEND_ERRORS = frozenset({"HttpError", "ClientError", "ParamValidationError"})


def is_empty_range(exc: BaseException) -> bool:
    """The answer to a range read of a zero-byte object (HTTP 416 / InvalidRange)."""
    text = f"{type(exc).__name__} {exc} {getattr(exc, 'code', '')}"
    return "416" in text or "InvalidRange" in text or "not satisfiable" in text.lower()
