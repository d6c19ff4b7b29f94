"""Retention policies as small values: each names the versions it keeps and why.

A version survives a prune if any policy keeps it. Policies only see committed exports whose
markers validated; everything else is handled by the orphan rules in ``retention``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from .errors import InvalidArgumentError
from .marker import ExportInfo


class RetentionPolicy(Protocol):
    def select(self, exports: Sequence[ExportInfo]) -> dict[int, str]:
        """{version: reason} for the exports this policy keeps (``exports`` ascending)."""
        ...


def check_keep(keep: object) -> None:
    if keep is None:
        return
    if not isinstance(keep, int) or isinstance(keep, bool) or keep <= 0:
        raise InvalidArgumentError(
            f"keep must be a positive whole number (or None to keep every export), got {keep!r}"
        )


@dataclass(frozen=True)
class KeepNewest:
    """The newest ``n`` versions; ``None`` keeps all."""

    n: int | None

    def select(self, exports: Sequence[ExportInfo]) -> dict[int, str]:
        chosen = exports if self.n is None else exports[-self.n :]
        label = "no limit on how many" if self.n is None else f"newest {self.n}"
        return {e.version: label for e in chosen}


@dataclass(frozen=True)
class KeepEveryHours:
    """One export per ``hours``: the oldest, then each first one created at least ``hours``
    after the previously kept one (tf.train.CheckpointManager's rule)."""

    hours: float

    def __post_init__(self) -> None:
        if not isinstance(self.hours, (int, float)) or not self.hours > 0:
            raise InvalidArgumentError(f"keep_every_hours must be > 0, got {self.hours!r}")

    def select(self, exports: Sequence[ExportInfo]) -> dict[int, str]:
        window = self.hours * 3600.0
        kept: dict[int, str] = {}
        last: float | None = None
        for e in sorted(exports, key=lambda e: (e.created, e.version)):
            if last is None or e.created - last >= window:
                kept[e.version] = f"one per {self.hours:g} h"
                last = e.created
        return kept


@dataclass(frozen=True)
class KeepBest:
    """The best ``n`` exports by a numeric metric in the marker metadata."""

    metric: str
    mode: str = "min"
    n: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.metric, str) or not self.metric:
            raise InvalidArgumentError("keep_best metric must be a non-empty string")
        if self.mode not in ("min", "max"):
            raise InvalidArgumentError(f"keep_best mode must be 'min' or 'max', got {self.mode!r}")
        check_keep(self.n)

    def select(self, exports: Sequence[ExportInfo]) -> dict[int, str]:
        best = best_by_metric(exports, self.metric, self.mode)[: self.n]
        return {e.version: f"best {self.n} by {self.metric} ({self.mode})" for _, e in best}


@dataclass(frozen=True)
class KeepPinned:
    """Versions that are never deleted."""

    versions: frozenset[int]

    def select(self, exports: Sequence[ExportInfo]) -> dict[int, str]:
        return {e.version: "pinned" for e in exports if e.version in self.versions}


def best_by_metric(
    exports: Iterable[ExportInfo], metric: str, mode: str = "min"
) -> list[tuple[float, ExportInfo]]:
    """``(value, export)`` for the exports that record ``metric`` (see ``metric_value``), best
    first: lowest for ``mode="min"``, highest for ``"max"``; of equal values, the newer first.

    The one ranking by metric: ``KeepBest``, ``promote(best=)`` and the Keras callback's stored
    best use it. (The estimator BestExporter ranks with the caller's ``compare_fn`` instead.)
    """
    if mode not in ("min", "max"):
        raise InvalidArgumentError(f"mode must be 'min' or 'max', got {mode!r}")
    sign = 1 if mode == "min" else -1
    scored = [(v, e) for e in exports if (v := metric_value(e, metric)) is not None]
    return sorted(scored, key=lambda item: (sign * item[0], -item[1].version))


def metric_value(export: ExportInfo, metric: str) -> float | None:
    """A finite numeric metric from the marker metadata.

    Looked up as a top-level key, then as a dotted path (``metrics.loss`` -> metadata
    ["metrics"]["loss"]), then under ``metrics``.
    """
    meta = export.metadata
    for value in (meta.get(metric), _dotted(meta, metric), _dotted(meta.get("metrics"), metric)):
        numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
        if numeric and math.isfinite(value):
            return float(value)
    return None


def _dotted(source: object, path: str) -> object:
    for part in path.split("."):
        if not isinstance(source, dict):
            return None
        source = source.get(part)
    return source


def build_policies(
    keep: int | None,
    keep_every_hours: float | None,
    keep_best: tuple[str, str, int] | KeepBest | None,
    pinned: Iterable[int],
) -> list[RetentionPolicy]:
    check_keep(keep)
    policies: list[RetentionPolicy] = [KeepNewest(keep)]
    if keep_every_hours is not None:
        policies.append(KeepEveryHours(keep_every_hours))
    if keep_best is not None:
        if not isinstance(keep_best, KeepBest):
            if not isinstance(keep_best, (tuple, list)) or len(keep_best) != 3:
                raise InvalidArgumentError(
                    f"keep_best must be (metric, 'min'|'max', n), got {keep_best!r}"
                )
            keep_best = KeepBest(*keep_best)
        policies.append(keep_best)
    pins = frozenset(pinned)
    if any(not isinstance(v, int) or isinstance(v, bool) for v in pins):
        raise InvalidArgumentError(f"pinned must hold int versions, got {sorted(pins, key=str)}")
    policies.append(KeepPinned(pins))
    return policies


def select_kept(
    policies: Sequence[RetentionPolicy], exports: Sequence[ExportInfo]
) -> dict[int, list[str]]:
    """{version: [reasons]} for every version some policy keeps."""
    kept: dict[int, list[str]] = {}
    for policy in policies:
        for version, reason in policy.select(exports).items():
            kept.setdefault(version, []).append(reason)
    return kept
