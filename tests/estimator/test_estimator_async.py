"""Estimator exporters with ``asynchronous=True`` under real train_and_evaluate (estimator venv)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import servers
from servers import Backend

pytest.importorskip(
    "tensorflow_estimator",
    reason="needs TF 2.15 with tensorflow-estimator: run tests/estimator in the estimator venv",
)
import tensorflow as tf
from tiny_estimator import EVERY, input_fn, make_estimator, serving_input_receiver_fn

from cloud_exporter import PermissionDeniedError, list_exports, verify_export
from cloud_exporter.estimator import BestExporter, FinalExporter, LatestExporter
from cloud_exporter.testing import FailOn, FaultyFileSystem

pytestmark = [pytest.mark.estimator, pytest.mark.tensorflow, pytest.mark.servers]
MAX_STEPS = 3 * EVERY


@pytest.fixture
def s3(request: pytest.FixtureRequest) -> Iterator[Backend]:
    backend = servers.server_backend_for(request, "s3")
    yield backend
    with contextlib.suppress(FileNotFoundError):  # nothing was ever committed there
        backend.new_fs().rm(backend.strip(backend.scratch), recursive=True)


def _train(tmp: Path, exporters: list[Any]) -> list[Any]:
    estimator = make_estimator(str(tmp / "model"))
    train_spec = tf.estimator.TrainSpec(lambda: input_fn(64, True), max_steps=MAX_STEPS)
    eval_spec = tf.estimator.EvalSpec(
        lambda: input_fn(32, False), steps=None, exporters=exporters, throttle_secs=0
    )
    return tf.estimator.train_and_evaluate(estimator, train_spec, eval_spec)[1]


def test_asynchronous_exporters_commit_every_export_in_order(s3: Backend, tmp_path: Path) -> None:
    slow = FaultyFileSystem(s3.new_fs(), latency=0.1)
    temp = tmp_path / "exports-tmp"
    temp.mkdir()
    opts: dict[str, Any] = {"filesystem": slow, "temp_dir": str(temp), "asynchronous": True}
    latest, best, final = (f"{s3.scratch}/{name}" for name in ("latest", "best", "final"))
    exporters = [
        LatestExporter(
            "latest", serving_input_receiver_fn, exports_to_keep=None, export_base=latest, **opts
        ),
        BestExporter(
            "best", serving_input_receiver_fn, exports_to_keep=None, export_base=best, **opts
        ),
        FinalExporter("final", serving_input_receiver_fn, export_base=final, **opts),
    ]
    # As stock: bytes, because a real Estimator's export_saved_model returns bytes.
    exported = [e.decode() for e in _train(tmp_path, exporters)]
    so = s3.storage_options
    stored = list_exports(latest, storage_options=so)
    assert [e.metadata["global_step"] for e in stored] == [EVERY, 2 * EVERY, MAX_STEPS]
    assert exported[0] == stored[-1].uri  # the final export waited for its commit
    finals = list_exports(final, storage_options=so)
    assert exported[2] == finals[0].uri and len(finals) == 1
    bests = list_exports(best, storage_options=so)
    assert bests[-1].metadata["global_step"] == MAX_STEPS and exported[1] == bests[-1].uri
    for base, export in [(latest, e) for e in stored] + [(final, finals[0])]:
        verify_export(base, export.version, deep=True, storage_options=so)
    assert list(temp.iterdir()) == []  # every local copy removed once published


def test_a_failed_background_export_stops_the_next_one(s3: Backend, tmp_path: Path) -> None:
    denied = FailOn(  # every data upload (small files go up with pipe_file, as claims do)
        predicate=lambda method, path: (
            method in ("put_file", "pipe_file") and not path.endswith(".claim")
        ),
        error=lambda: PermissionError(13, "denied"),
        times=None,
    )
    fs = FaultyFileSystem(s3.new_fs(), fail_on=[denied])
    temp = tmp_path / "exports-tmp"
    temp.mkdir()
    exporter = LatestExporter(
        "latest",
        serving_input_receiver_fn,
        export_base=f"{s3.scratch}/latest",
        filesystem=fs,
        temp_dir=str(temp),
        asynchronous=True,
    )
    with pytest.raises(PermissionDeniedError):
        _train(tmp_path, [exporter])
    assert list_exports(f"{s3.scratch}/latest", storage_options=s3.storage_options) == []
    assert list(temp.iterdir()) == []
