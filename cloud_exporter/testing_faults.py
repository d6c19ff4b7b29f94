"""The pieces of the fault-injection layer (cloud_exporter.testing): calls, rules, errors.

``Call`` is one logged call, ``FailOn`` one rule, ``transient_error`` an error shaped like the
ones s3fs raises; ``add_forwarding_methods`` gives the wrapper class its methods that forward a
call once through ``FaultyFileSystem._run``. Import the public names from cloud_exporter.testing.
"""

from __future__ import annotations

import errno
import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

Outcome = Literal["pending", "ok", "transient", "crash", "error"]

_TRANSIENT: dict[str, tuple[type[OSError], int, str]] = {
    "slow_down": (OSError, errno.EBUSY, "injected 503 SlowDown"),
    "too_many_requests": (OSError, errno.EBUSY, "injected 429 Too Many Requests"),
    "connection_reset": (ConnectionResetError, errno.ECONNRESET, "injected connection reset"),
    "timeout": (TimeoutError, errno.ETIMEDOUT, "injected timeout"),
}
TRANSIENT_KINDS = tuple(_TRANSIENT)
#: Calls that change storage. mkdir/makedirs/rmdir count only over local disk (object stores make
#: no request for them); ``open`` only in a writing mode.
MUTATING_METHODS = frozenset(
    {
        "pipe_file",
        "put_file",
        "put",
        "cp_file",
        "copy",
        "rm_file",
        "rm",
        "_rm",
        "mv",
        "touch",
        "mkdir",
        "makedirs",
        "rmdir",
        "open",
    }
)
#: Calls whose results the stale-listing fault affects.
LISTING_METHODS = frozenset({"ls", "find", "glob", "walk", "du"})


class InjectedCrash(Exception):
    """The simulated process died. Not an OSError, so retry logic treats it as permanent."""


def transient_error(kind: str, path: str = "") -> OSError:
    """A fresh error of ``kind`` (one of TRANSIENT_KINDS), shaped like the ones s3fs raises."""
    cls, code, message = _TRANSIENT[kind]
    return cls(code, message, path)


@dataclass
class Call:
    """One call received by the wrapper (calls its own helpers make are not logged)."""

    method: str
    paths: tuple[str, ...]
    mutating: bool
    outcome: Outcome
    time: float
    targets: tuple[str, ...] = ()  # the paths a mutating call changes
    applied: bool = False  # the mutation was carried out (also when its response was "lost")
    injected: bool = False  # the error, if any, came from the wrapper rather than from inner
    error: BaseException | None = None


@dataclass
class FailOn:
    """Fail chosen calls: a call matches when every condition given holds.

    ``nth`` counts calls of ``method`` (of every method if ``method`` is None), from 1.
    ``predicate(method, path)`` is tried on each path of the call. ``error`` is an exception or a
    factory; None draws a seeded transient error. ``times`` bounds how often the rule fires (None:
    always). ``after_mutation`` applies a mutating call, then fails it (lost response).
    """

    method: str | None = None
    nth: int | None = None
    predicate: Callable[[str, str], bool] | None = None
    error: BaseException | Callable[[], BaseException] | None = None
    after_mutation: bool = False
    times: int | None = 1
    fired: int = field(default=0, init=False)

    def fire(
        self, call: Call, calls: int, method_calls: int, rng: random.Random
    ) -> tuple[BaseException, bool, bool] | None:
        """(error, after_mutation, transient) if this rule fires on ``call``, else None.

        ``calls``/``method_calls``: how many calls (of any method / of ``call.method``) so far.
        """
        count = calls if self.method is None else method_calls
        if (
            (self.times is not None and self.fired >= self.times)
            or self.method not in (None, call.method)
            or self.nth not in (None, count)
            or (self.predicate and not any(self.predicate(call.method, p) for p in call.paths))
        ):
            return None
        self.fired += 1
        after = self.after_mutation and call.mutating
        if self.error is None:
            path = call.paths[-1] if call.paths else ""
            return transient_error(rng.choice(TRANSIENT_KINDS), path), after, True
        err = self.error if isinstance(self.error, BaseException) else self.error()
        return err, after, False


def flat_paths(paths: Any) -> list[str]:
    return [os.fspath(p) for p in paths] if isinstance(paths, (list, tuple)) else [os.fspath(paths)]


class WriteHook:
    """A file open for writing whose close() runs ``hook`` after the real close (the upload)."""

    def __init__(self, f: Any, hook: Callable[[], None]) -> None:
        self._f, self._hook, self._done = f, hook, False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)

    def __enter__(self) -> WriteHook:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if not self._done:
            self._done = True
            self._f.close()
            self._hook()


def forwarding_method(name: str, kind: str) -> Callable[..., Any]:
    """A method forwarding ``name`` once; kind: read, write, local_write (one path argument)."""

    def method(self: Any, path: Any, *args: Any, **kwargs: Any) -> Any:
        def fn() -> Any:
            return getattr(self.inner, name)(path, *args, **kwargs)

        paths, on = self._remote(path), kind == "write" or (kind == "local_write" and self.is_local)
        return self._run(
            name, fn, paths, paths if on else (), mutating=on, faultable=kind != "local_write" or on
        )

    method.__name__, method.__qualname__ = name, f"FaultyFileSystem.{name}"
    method.__doc__ = f"Forwards ``{name}`` to the inner filesystem once ({kind} call)."
    return method


def transfer_method(name: str, kind: str) -> Callable[..., Any]:
    """A method forwarding ``name(src, dst, ...)`` once; kind: put, copy, move."""

    def method(self: Any, src: Any, dst: Any, *args: Any, **kwargs: Any) -> Any:
        def fn() -> Any:
            return getattr(self.inner, name)(src, dst, *args, **kwargs)

        srcs = flat_paths(src) if kind == "put" else self._remote(src)
        dsts = self._remote(dst)
        return self._run(name, fn, srcs + dsts, srcs + dsts if kind == "move" else dsts)

    method.__name__, method.__qualname__ = name, f"FaultyFileSystem.{name}"
    method.__doc__ = f"Forwards ``{name}`` to the inner filesystem once (one mutating call)."
    return method


def add_forwarding_methods(cls: type) -> None:
    """Give the wrapper class its one-call forwarders: reads, writes and transfers."""
    for name in (
        "exists",
        "info",
        "isfile",
        "isdir",
        "cat_file",
        "cat",
        "size",
        "sizes",
        "modified",
        "created",
        "get_file",
        "get",
        "checksum",
        "ukey",
    ):
        setattr(cls, name, forwarding_method(name, "read"))
    for name in ("pipe_file", "touch", "rm_file", "rm"):
        setattr(cls, name, forwarding_method(name, "write"))
    for name in ("mkdir", "makedirs", "rmdir"):
        setattr(cls, name, forwarding_method(name, "local_write"))
    for name, kind in (
        ("put_file", "put"),
        ("put", "put"),
        ("cp_file", "copy"),
        ("copy", "copy"),
        ("mv", "move"),
    ):
        setattr(cls, name, transfer_method(name, kind))
