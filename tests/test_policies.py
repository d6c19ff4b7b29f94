"""best_by_metric: the one ranking that KeepBest, promote(best=) and the Keras callback share."""

from __future__ import annotations

import pytest

from cloud_exporter import InvalidArgumentError, KeepBest
from cloud_exporter.marker import ExportInfo
from cloud_exporter.policies import best_by_metric


def export(version: int, **metadata: object) -> ExportInfo:
    return ExportInfo(version, f"memory://b/{version}", float(version), (), dict(metadata))


EXPORTS = [
    export(1, loss=0.5),
    export(2, metrics={"loss": 0.2}),
    export(3, loss=float("nan")),  # not finite: not ranked
    export(4, accuracy=0.9),  # no loss: not ranked
    export(5, loss=0.2),  # ties version 2: the newer ranks first
    export(6, loss=True),  # a bool is not a number
]


def test_min_ranks_lowest_first_and_newer_first_on_ties() -> None:
    ranked = best_by_metric(EXPORTS, "loss", "min")
    assert [(v, e.version) for v, e in ranked] == [(0.2, 5), (0.2, 2), (0.5, 1)]


def test_max_ranks_highest_first() -> None:
    assert [e.version for _, e in best_by_metric(EXPORTS, "loss", "max")] == [1, 5, 2]


def test_keep_best_takes_the_head_of_the_ranking() -> None:
    assert set(KeepBest("loss", "min", 2).select(EXPORTS)) == {5, 2}
    assert best_by_metric(EXPORTS, "missing") == []


def test_mode_must_be_min_or_max() -> None:
    with pytest.raises(InvalidArgumentError, match="'min' or 'max'"):
        best_by_metric(EXPORTS, "loss", "lowest")
