"""Fault injection for fsspec filesystems: run a pipeline against flaky, crashing, lagging storage.

``FaultyFileSystem(inner)`` is an fsspec filesystem that forwards each call once to ``inner`` and
can inject, deterministically from a seed: transient errors (before the mutation, or after it as
a lost response), a crash at the k-th mutating call, stale listings and latency. It logs every
call it receives. Code that must know what is underneath (``isinstance(fs, LocalFileSystem)``)
looks through wrappers with :func:`innermost` (the ``.inner`` convention) but keeps calling ``fs``:
calls made on the unwrapped filesystem bypass the injection. See docs/testing.md.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from fsspec.implementations.local import LocalFileSystem
from fsspec.spec import AbstractFileSystem

from ._stale_listing import StaleIndex
from .errors import InvalidArgumentError
from .storage import innermost
from .testing_faults import (
    LISTING_METHODS,
    MUTATING_METHODS,
    TRANSIENT_KINDS,
    Call,
    FailOn,
    InjectedCrash,
    WriteHook,
    add_forwarding_methods,
    flat_paths,
    transient_error,
)

logger = logging.getLogger(__name__)

__all__ = [
    "Call",
    "FailOn",
    "FaultyFileSystem",
    "InjectedCrash",
    "LISTING_METHODS",
    "MUTATING_METHODS",
    "TRANSIENT_KINDS",
    "innermost",
    "transient_error",
]


class FaultyFileSystem(AbstractFileSystem):
    """Forwards to ``inner``, injecting the configured faults; see the module doc."""

    protocol = "faulty"  # replaced per instance by the inner filesystem's
    cachable = False

    def __init__(
        self,
        inner: AbstractFileSystem,
        *,
        seed: int = 0,
        transient_rate: float | Mapping[str, float] = 0.0,
        fail_after_mutation_rate: float = 0.0,
        fail_on: Sequence[FailOn] = (),
        crash_after: int | None = None,
        stale_seconds: float = 0.0,
        stale_calls: int = 0,
        latency: float | tuple[float, float] = 0.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__()
        if crash_after is not None and crash_after < 1:
            raise InvalidArgumentError("crash_after counts from 1; use None for no crash")
        if not 0.0 <= fail_after_mutation_rate <= 1.0:
            raise InvalidArgumentError("fail_after_mutation_rate must be within [0, 1]")
        self.inner = inner
        # fsspec declares these on the class (classmethods); instance attributes shadow them.
        self.protocol, self.root_marker, self.sep = inner.protocol, inner.root_marker, inner.sep
        self._strip_protocol = inner._strip_protocol  # type: ignore[method-assign]
        self._parent = inner._parent  # type: ignore[method-assign]
        self.seed, self.transient_rate = seed, transient_rate
        self.fail_after_mutation_rate, self.fail_on = fail_after_mutation_rate, list(fail_on)
        self.crash_after, self.latency = crash_after, latency
        self.stale_seconds, self.stale_calls = stale_seconds, stale_calls
        self._clock, self._sleep = clock, sleep
        self._lock, self._local = threading.RLock(), threading.local()
        self._stale = StaleIndex(inner, clock)
        self.reset_counters()

    def reset_counters(self) -> None:
        """Clear the call log, counters, rule counts and crash; restart the seeded sequences."""
        with self._lock:
            self.calls: list[Call] = []
            self.call_counts: Counter[str] = Counter()
            self.mutating_calls = 0
            self.crashed = False
            self._rng = random.Random(self.seed)
            self._latency_rng = random.Random(f"{self.seed}-latency")
            for rule in self.fail_on:
                rule.fired = 0

    def mutations(self) -> list[tuple[str, str]]:
        """(method, target path) of every applied mutation, in call order."""
        return [(c.method, t) for c in self.calls if c.mutating and c.applied for t in c.targets]

    @property
    def is_local(self) -> bool:
        """True when local disk is underneath (through any number of wrappers)."""
        return isinstance(innermost(self.inner), LocalFileSystem)

    @property
    def fsid(self) -> str:
        return self.inner.fsid

    def unstrip_protocol(self, name: str) -> str:
        return self.inner.unstrip_protocol(name)

    def __getattr__(self, name: str) -> Any:
        # Only backend-specific attributes land here; using them bypasses the injection.
        inner = self.__dict__.get("inner")
        if inner is None or name.startswith("__"):
            raise AttributeError(name)
        return getattr(inner, name)

    def __eq__(self, other: object) -> bool:
        return self is other

    def __hash__(self) -> int:
        return id(self)

    # -- the injection core ------------------------------------------------------------------

    @contextmanager
    def _nested(self) -> Iterator[None]:
        self._local.depth = getattr(self._local, "depth", 0) + 1
        try:
            yield
        finally:
            self._local.depth -= 1

    def _pick_fault(self, call: Call) -> tuple[BaseException | None, bool, bool]:
        """(error, after_mutation, transient) for a call; one RNG draw per faultable call."""
        draw, path = self._rng.random(), (call.paths[-1] if call.paths else "")
        for rule in self.fail_on:
            fault = rule.fire(call, len(self.calls), self.call_counts[call.method], self._rng)
            if fault is not None:
                return fault
        rate = self.transient_rate
        if isinstance(rate, Mapping):
            rate = rate.get(call.method, rate.get("*", 0.0))
        if draw < rate:
            kind = self._rng.choice(TRANSIENT_KINDS)
            after = call.mutating and self._rng.random() < self.fail_after_mutation_rate
            return transient_error(kind, path), after, True
        return None, False, False

    def _admit(
        self,
        method: str,
        paths: tuple[str, ...],
        targets: tuple[str, ...],
        mutating: bool,
        faultable: bool,
    ) -> tuple[Call, tuple[BaseException, bool] | None]:
        """Log the call; raise a crash or a before-mutation fault; return a deferred fault."""
        with self._lock:
            call = Call(method, paths, mutating, "pending", self._clock(), targets)
            self.calls.append(call)
            self.call_counts[method] += 1
            self._stale.listings += method in LISTING_METHODS
            if not self.crashed and mutating:
                self.mutating_calls += 1
                if self.crash_after is not None and self.mutating_calls >= self.crash_after:
                    self.crashed = True
                    logger.info(
                        "injected crash at mutating call %d: %s %s",
                        self.mutating_calls,
                        method,
                        paths,
                    )
            if self.crashed:
                call.outcome, call.injected = "crash", True
                call.error = InjectedCrash(f"injected crash (crash_after={self.crash_after})")
                raise call.error
            if not faultable:
                return call, None
            lat = self.latency
            delay = self._latency_rng.uniform(*lat) if isinstance(lat, tuple) else float(lat)
            err, after, transient = self._pick_fault(call)
        if delay > 0:
            self._sleep(delay)
        if err is None:
            return call, None
        call.injected = True
        if after:
            return call, (err, transient)
        call.outcome, call.error = ("transient" if transient else "error"), err
        logger.debug("injected %r before %s %s", err, method, paths)
        raise err

    def _finish(self, call: Call, deferred: tuple[BaseException, bool] | None) -> None:
        call.applied, call.outcome = call.mutating, "ok"
        if deferred is not None:
            err, transient = deferred
            call.outcome, call.error = ("transient" if transient else "error"), err
            logger.debug("injected %r after %s %s", err, call.method, call.paths)
            raise err

    def _run(
        self,
        method: str,
        fn: Callable[[], Any],
        paths: Sequence[str] = (),
        targets: Sequence[str] = (),
        *,
        mutating: bool | None = None,
        faultable: bool = True,
    ) -> Any:
        """Admit, forward once through ``fn``, track staleness, finish. Nested calls go straight."""
        if getattr(self._local, "depth", 0):
            return fn()
        mutating = method in MUTATING_METHODS if mutating is None else mutating
        call, deferred = self._admit(method, tuple(paths), tuple(targets), mutating, faultable)
        track = mutating and self._staleness_on
        before = self._snapshot(call.targets) if track else {}
        try:
            with self._nested():
                result = fn()
        except BaseException as exc:
            call.outcome, call.error = "error", exc
            raise
        finally:
            if track:
                self._track(before, self._snapshot(call.targets))
        self._finish(call, deferred)
        return result

    def _remote(self, paths: Any) -> list[str]:
        return [self._strip_protocol(p) for p in flat_paths(paths)]

    # -- staleness (see _stale_listing.StaleIndex) ------------------------------------------

    @property
    def _staleness_on(self) -> bool:
        self._stale.seconds, self._stale.calls = self.stale_seconds, self.stale_calls
        return self._stale.on

    def _snapshot(self, targets: Sequence[str]) -> dict[str, dict[str, Any]]:
        return self._stale.snapshot(list(targets))

    def _track(self, before: dict[str, Any], after: dict[str, Any]) -> None:
        self._stale.track(before, after)

    def _stale_view(
        self, entries: dict[str, dict[str, Any]], root: str, maxdepth: int | None, withdirs: bool
    ) -> dict[str, dict[str, Any]]:
        self._stale.seconds, self._stale.calls = self.stale_seconds, self.stale_calls
        return self._stale.view(entries, root, maxdepth, withdirs)

    def _stale_find(self, path: str, maxdepth: int | None, withdirs: bool, **kw: Any) -> dict:
        found = self.inner.find(path, maxdepth=maxdepth, withdirs=withdirs, detail=True, **kw)
        return self._stale_view(found, self._strip_protocol(path), maxdepth, withdirs)

    # -- listings (stale) --------------------------------------------------------------------

    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> list:
        def fn() -> list:
            root = self._strip_protocol(path)
            try:
                listing = self.inner.ls(path, detail=True, **kwargs)
            except FileNotFoundError:
                if not self._stale_view({}, root, None, False):
                    raise
                listing = []
            view = self._stale_view({i["name"]: i for i in listing}, root, 1, True)
            if listing and not view:
                raise FileNotFoundError(path)
            return list(view.values()) if detail else list(view)

        return self._run("ls", fn, self._remote(path))

    def find(
        self,
        path: str,
        maxdepth: int | None = None,
        withdirs: bool = False,
        detail: bool = False,
        **kwargs: Any,
    ) -> Any:
        def fn() -> Any:
            found = self._stale_find(path, maxdepth, withdirs, **kwargs)
            return found if detail else list(found)

        return self._run("find", fn, self._remote(path))

    def du(
        self,
        path: str,
        total: bool = True,
        maxdepth: int | None = None,
        withdirs: bool = False,
        **kwargs: Any,
    ) -> Any:
        def fn() -> Any:
            found = self._stale_find(path, maxdepth, withdirs, **kwargs)
            sizes = {name: info.get("size") or 0 for name, info in found.items()}
            return sum(sizes.values()) if total else sizes

        return self._run("du", fn, self._remote(path))

    def glob(self, path: str, maxdepth: int | None = None, **kwargs: Any) -> Any:
        """fsspec's generic glob over this wrapper's (stale) find, logged as one call."""
        return self._run(
            "glob",
            lambda: AbstractFileSystem.glob(self, path, maxdepth, **kwargs),
            self._remote(path),
        )

    def walk(self, path: str, *args: Any, **kwargs: Any) -> Iterator[Any]:
        """One logged call (faults fire now); the walk runs lazily over the stale ``ls``."""
        self._run("walk", lambda: None, self._remote(path))
        gen = AbstractFileSystem.walk(self, path, *args, **kwargs)

        def steps() -> Iterator[Any]:
            while True:
                with self._nested():
                    item = next(gen, None)
                if item is None:
                    return
                yield item

        return steps()

    def open(self, path: str, mode: str = "rb", *args: Any, **kwargs: Any) -> Any:
        """Writing modes are mutating: faults fire at open, a lost response at close."""
        if not set(mode) & set("wxa+") or getattr(self._local, "depth", 0):
            return self._run(
                "open",
                lambda: self.inner.open(path, mode, *args, **kwargs),
                self._remote(path),
                mutating=False,
            )
        p = tuple(self._remote(path))
        call, deferred = self._admit("open", p, p, True, True)
        before = self._snapshot(p) if self._staleness_on else None
        try:
            f = self.inner.open(path, mode, *args, **kwargs)
        except BaseException as exc:
            call.outcome, call.error = "error", exc
            raise
        call.outcome, call.applied = "ok", True
        if deferred is None and before is None:
            return f

        def on_close() -> None:
            if before is not None:
                self._track(before, self._snapshot(p))
            self._finish(call, deferred)

        return WriteHook(f, on_close)

    def _rm(self, path: Any) -> None:
        # Not inner._rm: on async filesystems that is a coroutine function.
        fn = self.inner.rm_file if isinstance(path, str) else self.inner.rm
        paths = self._remote(path)
        self._run("_rm", lambda: fn(path), paths, paths)

    def backend_call(
        self,
        method: str,
        path: str | list[str],
        fn: Callable[..., Any],
        *args: Any,
        targets: list[str] | None = None,
        **kwargs: Any,
    ) -> Any:
        """One mutating call of the backend's own API (a multipart part, a resumable chunk, a
        CopyObject, a DeleteObjects), logged as ``method`` on ``path`` (for a copy: ``[src,
        dst]``, of which only dst is written; ``targets`` when it writes several) and faulted
        like any fsspec call. Storage routes those calls here when this layer wraps the
        filesystem; fn is the real backend's."""
        paths = self._remote(path)
        written = paths[-1:] if targets is None else self._remote(targets)
        return self._run(method, lambda: fn(*args, **kwargs), paths, written, mutating=True)

    def invalidate_cache(self, path: str | None = None) -> None:
        """Forwarded and logged, never faulted (no request is made); staleness is unaffected."""
        self._run(
            "invalidate_cache",
            lambda: self.inner.invalidate_cache(path),
            self._remote(path) if path else (),
            faultable=False,
        )


add_forwarding_methods(FaultyFileSystem)
