"""The stale-listing fault of ``FaultyFileSystem``: a listing index that lags behind writes.

Tracked per object: a new object stays out of listings, a deleted one stays in them (with its
last known info), until ``stale_seconds`` pass or ``stale_calls`` further listings are made.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, Literal

from fsspec.spec import AbstractFileSystem


@dataclass
class _Pending:
    kind: Literal["new", "deleted"]
    info: dict[str, Any]
    since_time: float
    since_listing: int


class StaleIndex:
    """What a lagging index still hides or shows; listing results are passed through ``view``."""

    def __init__(self, inner: AbstractFileSystem, clock: Callable[[], float]) -> None:
        self.inner, self._clock = inner, clock
        self._lock = threading.RLock()
        self._pending: dict[str, _Pending] = {}
        self.listings = 0  # listing calls seen so far (the clock of ``stale_calls``)
        self.seconds, self.calls = 0.0, 0

    @property
    def on(self) -> bool:
        return self.seconds > 0 or self.calls > 0

    def snapshot(self, targets: tuple[str, ...] | list[str]) -> dict[str, dict[str, Any]]:
        """Every object below ``targets`` right now (taken around a mutation)."""
        out: dict[str, dict[str, Any]] = {}
        for t in targets:
            with suppress(FileNotFoundError):
                out.update(self.inner.find(t, detail=True))
        return out

    def track(self, before: dict[str, Any], after: dict[str, Any]) -> None:
        """Record what a mutation created and deleted."""
        with self._lock:
            pending, now, n = self.active(), self._clock(), self.listings
            for p in after.keys() - before.keys():
                if p not in pending:  # over a phantom, listings keep showing the old info
                    self._pending[p] = _Pending("new", {}, now, n)
            for p in before.keys() - after.keys():
                old = self._pending.pop(p, None)
                if old is None or old.kind == "deleted":  # a never-listed new file just vanishes
                    info = old.info if old else dict(before[p])
                    self._pending[p] = _Pending("deleted", info, now, n)

    def active(self) -> dict[str, _Pending]:
        with self._lock:
            now = self._clock()
            self._pending = {
                p: e
                for p, e in self._pending.items()
                if (self.seconds > 0 and now - e.since_time < self.seconds)
                or (self.calls > 0 and self.listings <= e.since_listing + self.calls)
            }
            return dict(self._pending)

    def _only_new_below(self, d: str, active: dict[str, _Pending]) -> bool:
        prefix = d.rstrip("/") + "/"
        below = {e.kind for p, e in active.items() if p.startswith(prefix)}
        if below != {"new"}:  # nothing invisible below, or phantoms keep the prefix listed
            return False
        try:
            files = self.inner.find(d)
        except FileNotFoundError:
            return False
        return all(f in active and active[f].kind == "new" for f in files)

    def view(
        self, entries: dict[str, dict[str, Any]], root: str, maxdepth: int | None, withdirs: bool
    ) -> dict[str, dict[str, Any]]:
        """``entries`` listed under ``root`` as a lagging index shows them."""
        active = self.active()
        if not active:
            return entries
        out: dict[str, dict[str, Any]] = {}
        for name, info in entries.items():
            e = active.get(name.rstrip("/"))
            if e is not None and e.kind == "new":
                continue
            if e is None and info.get("type") == "directory" and self._only_new_below(name, active):
                continue  # a prefix holding only invisible objects is invisible too
            out[name] = dict(e.info) if e is not None else info
        prefix = root if root.endswith("/") or not root else root + "/"
        for p, e in active.items():
            if e.kind != "deleted" or p in out or not (p == root or p.startswith(prefix)):
                continue
            parts = p[len(prefix) :].split("/") if p != root else []
            if maxdepth is None or len(parts) <= maxdepth:
                out[p] = dict(e.info)
            for i in range(1, len(parts) if withdirs else 0):
                d = prefix + "/".join(parts[:i])
                if (maxdepth is None or i <= maxdepth) and d not in out and d + "/" not in out:
                    out[d] = {"name": d, "size": 0, "type": "directory"}
        return dict(sorted(out.items()))
