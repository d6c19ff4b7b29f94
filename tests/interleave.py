"""Deterministic interleavings: run another client's work at an exact point of a call sequence.

``run_before(method, suffix, action)`` is a ``FailOn`` rule that never fails anything: the first
time a ``method`` call on a path ending with ``suffix`` reaches a ``FaultyFileSystem``, it runs
``action`` (on other filesystem instances) and then lets the call through.
"""

from __future__ import annotations

from collections.abc import Callable

from cloud_exporter.testing import FailOn


def run_before(
    method: str, suffix: str, action: Callable[[], None], nth: int | None = None
) -> FailOn:
    done: list[bool] = []

    def predicate(called: str, path: str) -> bool:
        if not done and called == method and path.endswith(suffix):
            done.append(True)
            action()
        return False

    return FailOn(method=method, nth=nth, predicate=predicate, times=None)
