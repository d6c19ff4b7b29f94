"""cloud_exporter.estimator with real tf.estimator training (TF 2.15 + tensorflow-estimator).

Run in the estimator venv: ``python -m pytest tests/estimator``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import servers
from servers import Backend

pytest.importorskip(
    "tensorflow_estimator",
    reason="needs TF 2.15 with tensorflow-estimator: run tests/estimator in the estimator venv",
)
import numpy as np
import tensorflow as tf
from tiny_estimator import EVERY, input_fn, make_estimator, serving_input_receiver_fn

from cloud_exporter import InvalidArgumentError, list_exports, publish, verify_export
from cloud_exporter.estimator import BestExporter, FinalExporter, LatestExporter

pytestmark = [pytest.mark.estimator, pytest.mark.tensorflow]
MAX_STEPS = 4 * EVERY  # four evaluations, at steps 10, 20, 30, 40


# ---------------------------------------------------------------------------------------------
# A tiny model, trained once per object store
# ---------------------------------------------------------------------------------------------
@dataclass
class Run:
    backend: Backend
    estimator: Any
    model_dir: Path
    exported: list[Any]  # what train_and_evaluate returned from the last evaluation's exporters
    asset: Path

    def base(self, name: str) -> str:
        return f"{self.backend.scratch}/{name}"


@pytest.fixture(scope="module", params=["s3", "gcs"])
def run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    """train_and_evaluate with our three exporters publishing to one object store."""
    backend = servers.server_backend_for(request, request.param)
    tmp = tmp_path_factory.mktemp(f"run-{request.param}")
    asset = tmp / "vocab.txt"
    asset.write_text("a\nb\n")
    opts = {"storage_options": backend.storage_options}
    exporters = [
        LatestExporter(
            "latest",
            serving_input_receiver_fn,
            {"vocab.txt": str(asset)},
            False,
            2,
            export_base=f"{backend.scratch}/latest",
            **opts,
        ),
        BestExporter(
            "best",
            serving_input_receiver_fn,
            exports_to_keep=2,
            export_base=f"{backend.scratch}/best",
            **opts,
        ),
        FinalExporter(
            "final",
            serving_input_receiver_fn,
            assets_extra={"vocab.txt": str(asset)},
            export_base=f"{backend.scratch}/final",
            **opts,
        ),
    ]
    estimator = make_estimator(str(tmp / "model"))
    train_spec = tf.estimator.TrainSpec(lambda: input_fn(64, True), max_steps=MAX_STEPS)
    eval_spec = tf.estimator.EvalSpec(
        lambda: input_fn(32, False), steps=None, exporters=exporters, throttle_secs=0
    )
    _, exported = tf.estimator.train_and_evaluate(estimator, train_spec, eval_spec)
    yield Run(backend, estimator, tmp / "model", exported, asset)
    backend.new_fs().rm(backend.strip(backend.scratch), recursive=True)


def predict(saved_model_dir: Path, x: list[float]) -> list[float]:
    loaded = tf.saved_model.load(str(saved_model_dir))
    out = loaded.signatures["predict"](x=tf.constant([[v] for v in x], tf.float32))
    return out["predictions"].numpy().ravel().tolist()


def _check_loads_and_predicts(run: Run, uri: str, dest: Path) -> None:
    local = run.backend.download(uri, dest)
    assert (local / "saved_model.pb").is_file()
    got = predict(local, [0.0, 0.5])
    assert got == pytest.approx([1.0, 2.0], abs=0.3)  # learned y = 2x + 1


# ---------------------------------------------------------------------------------------------
# train_and_evaluate against the object stores
# ---------------------------------------------------------------------------------------------
@pytest.mark.servers
def test_latest_exporter_keeps_the_newest_and_they_load(run: Run, tmp_path: Path) -> None:
    opts = run.backend.storage_options
    exports = list_exports(run.base("latest"), storage_options=opts)
    assert [e.metadata["global_step"] for e in exports] == [30, 40]
    assert run.exported[0] == exports[-1].uri.encode()  # bytes, as stock returns
    for export in exports:
        verify_export(run.base("latest"), export.version, deep=True, storage_options=opts)
        assert "assets.extra/vocab.txt" in {f.path for f in export.files}
        meta = export.metadata
        assert meta["exporter"] == "latest" and meta["exporter_class"] == "LatestExporter"
        assert meta["checkpoint_path"].endswith(f"model.ckpt-{meta['global_step']}")
        assert set(meta["metrics"]) >= {"loss", "average_loss", "global_step"}
    _check_loads_and_predicts(run, exports[-1].uri, tmp_path / "latest")
    extra = run.backend.download(exports[-1].uri, tmp_path / "again") / "assets.extra"
    assert (extra / "vocab.txt").read_text() == "a\nb\n"


@pytest.mark.servers
def test_best_exporter_keeps_a_chain_of_improvements(run: Run, tmp_path: Path) -> None:
    opts = run.backend.storage_options
    exports = list_exports(run.base("best"), storage_options=opts)
    assert len(exports) == 2
    losses = [e.metadata["metrics"]["loss"] for e in exports]
    assert losses == sorted(losses, reverse=True)  # each beat the one before
    assert exports[-1].metadata["global_step"] == MAX_STEPS  # SGD on a line keeps improving
    for export in exports:
        verify_export(run.base("best"), export.version, deep=True, storage_options=opts)
    _check_loads_and_predicts(run, exports[-1].uri, tmp_path / "best")


@pytest.mark.servers
def test_final_exporter_publishes_once_at_the_end(run: Run, tmp_path: Path) -> None:
    opts = run.backend.storage_options
    exports = list_exports(run.base("final"), storage_options=opts)
    assert len(exports) == 1
    assert exports[0].metadata["is_the_final_export"] is True
    assert exports[0].metadata["global_step"] == MAX_STEPS
    assert run.exported[2] == exports[0].uri.encode()
    verify_export(run.base("final"), exports[0].version, deep=True, storage_options=opts)
    assert "assets.extra/vocab.txt" in {f.path for f in exports[0].files}
    _check_loads_and_predicts(run, exports[0].uri, tmp_path / "final")


def _checkpoints(run: Run) -> list[str]:
    return list(tf.train.get_checkpoint_state(str(run.model_dir)).all_model_checkpoint_paths)


@pytest.mark.servers
def test_best_exporter_across_a_restart_compares_with_the_true_best(run: Run) -> None:
    """A new exporter (a restarted job) reads the best from the markers; the stock one does not."""
    base, opts = run.base("restart"), run.backend.storage_options
    ckpt = _checkpoints(run)[-1]

    def export(exporter: BestExporter, loss: float) -> bytes | None:
        result = {"loss": np.float32(loss), "global_step": np.int64(40)}
        return exporter.export(run.estimator, "unused", ckpt, result, False)

    first = BestExporter(
        "best", serving_input_receiver_fn, exports_to_keep=2, export_base=base, storage_options=opts
    )
    assert export(first, 1.0) is not None
    assert export(first, 2.0) is None
    restarted = BestExporter(
        "best", serving_input_receiver_fn, exports_to_keep=2, export_base=base, storage_options=opts
    )
    assert export(restarted, 1.5) is None  # worse than the true best (1.0)
    assert [e.metadata["metrics"]["loss"] for e in list_exports(base, storage_options=opts)] == [
        1.0
    ]
    assert export(restarted, 0.5) is not None
    assert export(restarted, 0.25) is not None
    remaining = list_exports(base, storage_options=opts)
    assert [e.metadata["metrics"]["loss"] for e in remaining] == [0.5, 0.25]  # 2 most recent best


@pytest.mark.servers
def test_stock_best_exporter_exports_a_worse_model_after_a_restart(
    run: Run, tmp_path: Path
) -> None:
    """Why ours reads markers: a restarted stock exporter reads the best loss from the eval
    event files, yet its first export in a process happens whatever the loss."""
    stock = tf.estimator.BestExporter("best", serving_input_receiver_fn)
    result = {"loss": np.float32(99.0), "global_step": np.int64(MAX_STEPS)}
    ckpt = _checkpoints(run)[-1]
    assert stock.export(run.estimator, str(tmp_path / "stock"), ckpt, result, False) is not None
    assert stock._best_eval_result["loss"] == 99.0  # it now believes 99 is the best


@pytest.fixture(scope="module")
def run_local(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, str]:
    """An estimator trained briefly on local disk, and its checkpoint (no exporters)."""
    model_dir = tmp_path_factory.mktemp("local") / "model"
    estimator = make_estimator(str(model_dir))
    estimator.train(lambda: input_fn(64, True), max_steps=EVERY)
    return estimator, estimator.latest_checkpoint()


def test_best_exporter_pins_the_best_against_foreign_newer_exports(
    run_local: Any, tmp_path: Path
) -> None:
    """A worse export published into the base by someone else must not push a best one out."""
    estimator, ckpt = run_local
    base = str(tmp_path / "best")
    exporter = BestExporter("best", serving_input_receiver_fn, exports_to_keep=2, export_base=base)
    best = exporter.export(estimator, "unused", ckpt, {"loss": 1.0}, False)
    source = estimator.export_saved_model(str(tmp_path / "raw"), serving_input_receiver_fn)
    foreign = publish(source.decode(), base, metadata={"metrics": {"loss": 9.0}})  # newer, worse
    assert exporter.export(estimator, "unused", ckpt, {"loss": 3.0}, False) is None
    better = exporter.export(estimator, "unused", ckpt, {"loss": 0.5}, False)
    remaining = [e.uri.removeprefix("file://").encode() for e in list_exports(base)]
    assert remaining == [best, better]  # keep=2 newest would have kept the foreign one instead
    assert foreign.uri.removeprefix("file://").encode() not in remaining


# ---------------------------------------------------------------------------------------------
# Drop-in contract
# ---------------------------------------------------------------------------------------------
def test_default_base_is_the_stock_export_path_and_returns_a_plain_path(run_local: Any) -> None:
    estimator, ckpt = run_local
    export_path = os.path.join(estimator.model_dir, "export", "latest")
    exporter = LatestExporter("latest", serving_input_receiver_fn, exports_to_keep=None)
    raw = exporter.export(estimator, export_path, ckpt, {"loss": 1.0, "global_step": 10}, False)
    assert isinstance(raw, bytes)  # what export_saved_model returns, as the stock exporter
    result = raw.decode()
    assert os.path.dirname(result) == export_path
    assert os.path.isfile(os.path.join(result, "saved_model.pb"))
    assert list_exports(export_path)[0].metadata["global_step"] == 10


def test_as_text_writes_saved_model_pbtxt(run_local: Any, tmp_path: Path) -> None:
    estimator, ckpt = run_local
    exporter = FinalExporter(
        "final", serving_input_receiver_fn, as_text=True, export_base=str(tmp_path / "final")
    )
    assert exporter.export(estimator, "unused", ckpt, {"loss": 1.0}, False) is None  # not final
    result = exporter.export(estimator, "unused", ckpt, {"loss": 1.0}, True)
    assert os.path.isfile(os.path.join(result.decode(), "saved_model.pbtxt"))


def test_exporters_are_stock_exporters_and_evalspec_accepts_them() -> None:
    exporters = [
        LatestExporter("a", serving_input_receiver_fn),
        BestExporter(),
        FinalExporter("c", serving_input_receiver_fn),
    ]
    assert [e.name for e in exporters] == ["a", "best_exporter", "c"]
    assert all(isinstance(e, tf.estimator.Exporter) for e in exporters)
    spec = tf.estimator.EvalSpec(lambda: input_fn(8, False), exporters=exporters)
    assert tuple(spec.exporters) == tuple(exporters)


def test_same_value_errors_as_the_stock_classes() -> None:
    for keep in (0, -1):
        with pytest.raises(ValueError):
            LatestExporter("a", serving_input_receiver_fn, exports_to_keep=keep)
        with pytest.raises(ValueError):
            BestExporter(exports_to_keep=keep)
    with pytest.raises(ValueError, match="must not be None"):
        BestExporter(compare_fn=None)
    with pytest.raises(ValueError, match="current_eval_result"):
        BestExporter(compare_fn=lambda best_eval_result: True)
    with pytest.raises(ValueError, match="not expected args"):
        BestExporter(compare_fn=lambda best_eval_result, current_eval_result, other: True)
    BestExporter(compare_fn=lambda best_eval_result, current_eval_result: True)
    with pytest.raises(InvalidArgumentError, match="mode"):
        LatestExporter("a", serving_input_receiver_fn, mode="fast")
    with pytest.raises(InvalidArgumentError, match="JSON"):
        LatestExporter("a", serving_input_receiver_fn, metadata={"when": object()})
    with pytest.raises(InvalidArgumentError, match="not both"):
        FinalExporter("a", serving_input_receiver_fn, filesystem=object(), storage_options={"a": 1})


def test_default_compare_fn_needs_loss(run_local: Any, tmp_path: Path) -> None:
    estimator, ckpt = run_local
    exporter = BestExporter(
        serving_input_receiver_fn=serving_input_receiver_fn, export_base=str(tmp_path / "b")
    )
    assert exporter.export(estimator, "unused", ckpt, {"loss": 1.0}, False) is not None
    with pytest.raises(ValueError, match="no loss"):
        exporter.export(estimator, "unused", ckpt, {"accuracy": 1.0}, False)


# ---------------------------------------------------------------------------------------------
# Multi-worker: TF_CONFIG with a chief and a worker, two processes
# ---------------------------------------------------------------------------------------------
WORKER_SCRIPT = textwrap.dedent(
    """
    import json, sys
    sys.path.insert(0, sys.argv[1])
    from tiny_estimator import make_estimator, serving_input_receiver_fn
    from cloud_exporter.estimator import LatestExporter

    model_dir, base, options, checkpoints = sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:]
    estimator = make_estimator(model_dir)
    exporter = LatestExporter("latest", serving_input_receiver_fn, exports_to_keep=None,
                              export_base=base, storage_options=json.loads(options))
    results = [
        exporter.export(estimator, "unused", ckpt, {"loss": 1.0}, False) for ckpt in checkpoints
    ]
    results = [r.decode() if isinstance(r, bytes) else r for r in results]
    print(json.dumps({"task": estimator.config.task_type, "results": results}))
    """
)


def _tf_config(task_type: str) -> str:
    cluster = {"chief": ["127.0.0.1:1"], "worker": ["127.0.0.1:2"]}
    return json.dumps({"cluster": cluster, "task": {"type": task_type, "index": 0}})


def test_multi_worker_publishes_once_per_export_point(
    run_local: Any, s3_backend: Backend, tmp_path: Path
) -> None:
    estimator, _ = run_local
    script = tmp_path / "worker.py"
    script.write_text(WORKER_SCRIPT)
    base = s3_backend.base
    checkpoints = list(
        tf.train.get_checkpoint_state(estimator.model_dir).all_model_checkpoint_paths
    )
    assert len(checkpoints) == 2  # two export points: steps 0 and 10

    def start(task_type: str) -> subprocess.Popen[str]:
        env = {**os.environ, "TF_CONFIG": _tf_config(task_type), "TF_CPP_MIN_LOG_LEVEL": "2"}
        argv = [
            sys.executable,
            str(script),
            str(Path(__file__).parent),
            estimator.model_dir,
            base,
            json.dumps(s3_backend.storage_options),
            *checkpoints,
        ]
        return subprocess.Popen(
            argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    def finish(process: subprocess.Popen[str]) -> dict[str, Any]:
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err[-3000:]
        return json.loads(out.strip().splitlines()[-1])

    alone = finish(start("worker"))
    assert alone == {"task": "worker", "results": [None, None]}
    fs = s3_backend.new_fs()
    assert fs.find(s3_backend.strip(s3_backend.scratch)) == []  # the worker wrote nothing

    chief, worker = start("chief"), start("worker")
    chief_out, worker_out = finish(chief), finish(worker)
    assert worker_out["results"] == [None, None]
    exports = list_exports(base, storage_options=s3_backend.storage_options)
    assert [e.uri for e in exports] == chief_out["results"]
    assert [e.metadata["checkpoint_path"] for e in exports] == checkpoints
    assert {e.metadata["task"] for e in exports} == {"chief:0"}
