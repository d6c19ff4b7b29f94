"""Small statistics and the target checks the report is made of."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Summary:
    """Median and range of repeated measurements."""

    median: float
    low: float
    high: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Summary:
        if not values:
            raise ValueError("no measurements")
        return cls(statistics.median(values), min(values), max(values), len(values))

    def fmt(self, digits: int = 2, unit: str = "") -> str:
        return f"{self.median:.{digits}f}{unit}"

    def spread(self, digits: int = 2, unit: str = "") -> str:
        return f"{self.low:.{digits}f}-{self.high:.{digits}f}{unit}"


@dataclass
class Check:
    """One target: what was measured, the limit, PASS/MISS (or n/a with the reason)."""

    target: str  # "1", "2", ... as in the issue
    what: str
    measured: str
    spread: str
    limit: str
    status: str  # PASS, MISS, n/a
    note: str = ""
    value: float | None = None
    bound: float | None = None

    @classmethod
    def compare(
        cls,
        target: str,
        what: str,
        value: float,
        bound: float,
        *,
        digits: int = 2,
        unit: str = "",
        spread: str = "",
        note: str = "",
        limit: str | None = None,
    ) -> Check:
        status = "PASS" if value <= bound else "MISS"
        if status == "MISS" and bound > 0:
            miss = f"over by {value / bound - 1:.1%}"
            note = f"{miss}; {note}" if note else miss
        return cls(
            target,
            what,
            f"{value:.{digits}f}{unit}",
            spread,
            limit if limit is not None else f"≤ {bound:.{digits}f}{unit}",
            status,
            note,
            value,
            bound,
        )

    @classmethod
    def skipped(cls, target: str, what: str, why: str, limit: str = "") -> Check:
        return cls(target, what, "—", "", limit, "n/a", why)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
