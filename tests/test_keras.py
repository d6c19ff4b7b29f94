"""cloud_exporter.keras: publish_model and ExportCallback with real Keras 3 training."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from savedmodels import tree
from servers import Backend

keras = pytest.importorskip(
    "keras", minversion="3", reason="the Keras adapter needs Keras 3 (the main venv, TF >= 2.16)"
)
np = pytest.importorskip("numpy", reason="installed with TensorFlow")
tf = pytest.importorskip("tensorflow", reason="the Keras adapter needs TensorFlow")

from cloud_exporter import InvalidArgumentError, list_exports, publish, verify_export  # noqa: E402
from cloud_exporter.keras import ExportCallback, publish_model  # noqa: E402

pytestmark = pytest.mark.tensorflow
X = np.linspace(-1, 1, 64, dtype="float32").reshape(-1, 2)
Y = X.sum(axis=1, keepdims=True)


def _model(seed: int = 0) -> Any:
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    return model


def _predict(saved_model_dir: Path, x: Any) -> Any:
    loaded = tf.saved_model.load(str(saved_model_dir))
    outputs = loaded.signatures["serving_default"](tf.constant(x))
    return next(iter(outputs.values())).numpy()


# ---------------------------------------------------------------------------------------------
# publish_model
# ---------------------------------------------------------------------------------------------
def test_publish_model_keras_and_tf_module(backend: Backend, tmp_path: Path) -> None:
    model = _model()
    opts = backend.storage_options
    info = publish_model(model, backend.base, metadata={"run": "a"}, storage_options=opts)
    assert info.metadata == {"run": "a"}
    verify_export(backend.base, info.version, deep=True, storage_options=opts)
    local = backend.download(info.uri, tmp_path / "keras")
    np.testing.assert_allclose(_predict(local, X[:4]), model.predict(X[:4], verbose=0), rtol=1e-5)

    class Doubler(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
        def __call__(self, x: Any) -> Any:
            return {"y": 2.0 * x}

    module = Doubler()
    info = publish_model(
        module,
        backend.base,
        export_kwargs={"signatures": module.__call__},
        storage_options=opts,
    )
    local = backend.download(info.uri, tmp_path / "module")
    assert _predict(local, [1.0, 2.5]).tolist() == [2.0, 5.0]
    assert [e.version for e in list_exports(backend.base, storage_options=opts)][-1] == info.version


def test_publish_model_rejects_other_objects(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match=r"keras\.Model or a tf\.Module"):
        publish_model(object(), str(tmp_path / "exports"))
    assert not (tmp_path / "exports").exists()


# ---------------------------------------------------------------------------------------------
# ExportCallback in fit
# ---------------------------------------------------------------------------------------------
def test_callback_fit_publishes_to_object_stores(server_backend: Backend, tmp_path: Path) -> None:
    opts = server_backend.storage_options
    model = _model()
    callback = ExportCallback(server_backend.base, every_n_epochs=2, storage_options=opts)
    model.fit(X, Y, epochs=4, batch_size=8, verbose=0, callbacks=[callback])
    exports = list_exports(server_backend.base, storage_options=opts)
    assert [e.metadata["epoch"] for e in exports] == [2, 4]
    assert [e.version for e in exports] == [i.version for i in callback.published]
    assert set(exports[-1].metadata["metrics"]) == {"loss"}
    for export in exports:
        verify_export(server_backend.base, export.version, deep=True, storage_options=opts)
    local = server_backend.download(exports[-1].uri, tmp_path / "latest")
    assert (local / "saved_model.pb").is_file()
    np.testing.assert_allclose(_predict(local, X[:3]), model.predict(X[:3], verbose=0), rtol=1e-5)


def test_callback_on_train_end_publishes_the_epoch_the_cadence_skipped(tmp_path: Path) -> None:
    base = str(tmp_path / "exports")
    callback = ExportCallback(base, every_n_epochs=2, keep=None)
    _model().fit(X, Y, epochs=3, verbose=0, callbacks=[callback])
    assert [e.metadata["epoch"] for e in list_exports(base)] == [2, 3]


def test_callback_keep_prunes_to_the_newest(tmp_path: Path) -> None:
    base = str(tmp_path / "exports")
    callback = ExportCallback(base, keep=2)
    _model().fit(X, Y, epochs=4, verbose=0, callbacks=[callback])
    assert len(callback.published) == 4
    assert [e.metadata["epoch"] for e in list_exports(base)] == [3, 4]


def _drive(callback: ExportCallback, model: Any, logs: list[dict[str, float]]) -> list[int]:
    """Run the callback hooks as fit would; return the epochs it published."""
    callback.set_model(model)
    before = len(callback.published)
    callback.on_train_begin()
    for epoch, epoch_logs in enumerate(logs):
        callback.on_epoch_end(epoch, epoch_logs)
    callback.on_train_end()
    return [i.metadata["epoch"] for i in callback.published[before:]]


def test_monitor_publishes_only_improvements_and_survives_a_restart(tmp_path: Path) -> None:
    base = str(tmp_path / "exports")
    model = _model()
    first = ExportCallback(base, monitor="val_loss", keep=None)
    assert _drive(first, model, [{"val_loss": 1.0}, {"val_loss": 2.0}, {"val_loss": 0.5}]) == [1, 3]
    stored = list_exports(base)
    assert [e.metadata["metrics"]["val_loss"] for e in stored] == [1.0, 0.5]
    assert stored[-1].metadata["monitor"] == {"name": "val_loss", "mode": "min"}

    restarted = ExportCallback(base, monitor="val_loss", keep=None)  # a new process: no memory
    assert _drive(restarted, model, [{"val_loss": 0.7}, {"val_loss": 0.6}]) == []
    assert restarted.best == 0.5
    assert _drive(restarted, model, [{"val_loss": 0.4}]) == [1]
    assert len(list_exports(base)) == 3


def test_monitor_max_mode_cadence_and_missing_metric(tmp_path: Path, caplog) -> None:
    base = str(tmp_path / "exports")
    model = _model()
    callback = ExportCallback(base, every_n_epochs=2, monitor="acc", mode="max", keep=1)
    logs = [{"acc": 0.5}, {"acc": 0.6}, {"acc": 0.9}, {"acc": 0.7}, {"acc": 0.8}]
    # Checked at epochs 2 and 4, and at the end for epoch 5: 0.6 yes, 0.7 yes, 0.8 yes.
    assert _drive(callback, model, logs) == [2, 4, 5]
    assert [e.metadata["epoch"] for e in list_exports(base)] == [5]  # keep=1 (and the best)
    assert _drive(callback, model, [{"loss": 0.1}, {"loss": 0.1}]) == []
    assert "not in the logs" in caplog.text


def test_callback_rejects_bad_arguments(tmp_path: Path) -> None:
    base = str(tmp_path / "x")
    bad: list[dict[str, Any]] = [
        {"every_n_epochs": 0},
        {"mode": "avg"},
        {"keep": 0},
        {"monitor": ""},
        {"publish_mode": "fast"},
        {"min_delta": -1.0},
        {"metadata": {"x": float("nan")}},
    ]
    for kwargs in bad:
        with pytest.raises(InvalidArgumentError):
            ExportCallback(base, **kwargs)
    with pytest.raises(InvalidArgumentError):
        ExportCallback("")


# ---------------------------------------------------------------------------------------------
# Multi-worker: only the chief publishes
# ---------------------------------------------------------------------------------------------
WORKER_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import keras, numpy as np
    from cloud_exporter.keras import ExportCallback

    base, options = sys.argv[1], json.loads(sys.argv[2])
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    x = np.linspace(-1, 1, 32, dtype="float32").reshape(-1, 2)
    callback = ExportCallback(base, storage_options=options)
    model.fit(x, x.sum(1, keepdims=True), epochs=2, verbose=0, callbacks=[callback])
    print(json.dumps([info.version for info in callback.published]))
    """
)


def _tf_config(task_type: str) -> str:
    cluster = {"chief": ["127.0.0.1:1"], "worker": ["127.0.0.1:2"]}
    return json.dumps({"cluster": cluster, "task": {"type": task_type, "index": 0}})


def _start(script: Path, backend: Backend, task_type: str) -> subprocess.Popen[str]:
    env = {**os.environ, "TF_CONFIG": _tf_config(task_type), "TF_CPP_MIN_LOG_LEVEL": "2"}
    argv = [sys.executable, str(script), backend.base, json.dumps(backend.storage_options)]
    return subprocess.Popen(
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _finish(process: subprocess.Popen[str]) -> list[int]:
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


def test_multi_worker_only_the_chief_publishes(s3_backend: Backend, tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(WORKER_SCRIPT)
    fs = s3_backend.new_fs()
    assert _finish(_start(script, s3_backend, "worker")) == []
    fs.invalidate_cache()
    assert fs.find(s3_backend.strip(s3_backend.scratch)) == []  # the worker wrote nothing

    chief, worker = (_start(script, s3_backend, kind) for kind in ("chief", "worker"))
    published, nothing = _finish(chief), _finish(worker)
    assert nothing == []
    exports = list_exports(s3_backend.base, storage_options=s3_backend.storage_options)
    assert [e.version for e in exports] == published
    assert [e.metadata["epoch"] for e in exports] == [1, 2]  # once per export point
    assert {e.metadata["task"] for e in exports} == {"chief:0"}


def test_is_chief_overrides_tf_config(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TF_CONFIG", _tf_config("worker"))
    base = str(tmp_path / "exports")
    callback = ExportCallback(base, is_chief=True)
    _model().fit(X, Y, epochs=1, verbose=0, callbacks=[callback])
    assert [e.metadata["task"] for e in list_exports(base)] == ["is_chief=True"]
    silent = ExportCallback(str(tmp_path / "other"), is_chief=False)
    _model().fit(X, Y, epochs=1, verbose=0, callbacks=[silent])
    assert not (tmp_path / "other").exists()
    assert tree(tmp_path / "exports")  # the first one did publish


def test_publish_model_through_the_core_api_matches(tmp_path: Path) -> None:
    """publish_model is publish() of model.export(): the same files as a manual export."""
    model = _model()
    manual = tmp_path / "manual"
    model.export(str(manual), verbose=False)
    info = publish_model(model, str(tmp_path / "a"))
    reference = publish(manual, str(tmp_path / "b"))
    assert sorted(f.path for f in info.files) == sorted(f.path for f in reference.files)


def test_estimator_adapter_explains_itself_on_current_tensorflow() -> None:
    assert not hasattr(tf, "estimator") or tf.__version__.startswith("2.15")
    with pytest.raises(
        ImportError, match=r"TensorFlow 2\.15 with tensorflow-estimator.*cloud_exporter\.keras"
    ):
        import cloud_exporter.estimator  # noqa: F401
