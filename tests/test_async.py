"""publish_async: background publishing, per-base ordering, and every way a failure surfaces."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest
from savedmodels import fake_saved_model
from servers import Backend

import cloud_exporter as ce
from cloud_exporter.asynchronous import set_exit_timeout, wait_all
from cloud_exporter.testing import FailOn, FaultyFileSystem


def _data_upload(method: str, path: str) -> bool:
    """Every upload of a model file (small files go up with pipe_file, as claims do)."""
    return method in ("put_file", "pipe_file") and not path.endswith(".claim")


DENIED = FailOn(
    predicate=_data_upload, error=lambda: PermissionError(13, "injected denial"), times=None
)


def _source(tmp_path: Path, seed: int) -> Path:
    return fake_saved_model(tmp_path / f"src-{seed}", seed=seed)


def test_publish_async_commits_on_every_backend(backend: Backend, tmp_path: Path) -> None:
    opts = backend.storage_options
    source = _source(tmp_path, 1)
    future = ce.publish_async(source, backend.base, metadata={"k": 1}, storage_options=opts)
    info = future.result(timeout=60)
    assert info.metadata == {"k": 1}
    assert [e.version for e in ce.list_exports(backend.base, storage_options=opts)] == [
        info.version
    ]
    ce.verify_export(backend.base, info.version, deep=True, storage_options=opts)


@pytest.mark.parametrize("max_in_flight", [1, 3])
def test_versions_follow_submission_order(
    s3_backend: Backend, tmp_path: Path, max_in_flight: int
) -> None:
    slow = FaultyFileSystem(s3_backend.new_fs(), latency=(0.0, 0.05), seed=max_in_flight)
    futures = []
    for i in range(5):
        futures.append(
            ce.publish_async(
                _source(tmp_path, i),
                s3_backend.base,
                metadata={"i": i},
                filesystem=slow,
                max_in_flight=max_in_flight,
            )
        )
    infos = [f.result(timeout=120) for f in futures]
    versions = [i.version for i in infos]
    assert versions == sorted(versions) and len(set(versions)) == 5
    stored = ce.list_exports(s3_backend.base, storage_options=s3_backend.storage_options)
    assert [e.metadata["i"] for e in stored] == [0, 1, 2, 3, 4]


def test_one_in_flight_per_base_by_default(tmp_path: Path) -> None:
    base = str(tmp_path / "exports")
    gate, uploading = threading.Event(), threading.Event()

    def progress(_: int) -> None:
        uploading.set()
        gate.wait(10)

    started = [ce.publish_async(_source(tmp_path, i), base, progress=progress) for i in range(3)]
    assert uploading.wait(10)
    # The first holds its upload at the gate; the others have not started (queued, not running).
    assert not any(f.done() for f in started)
    assert [f.running() for f in started] == [True, False, False]
    gate.set()
    assert len({f.result(timeout=30).version for f in started}) == 3


def test_failure_is_raised_at_result(s3_backend: Backend, tmp_path: Path) -> None:
    denied = FaultyFileSystem(s3_backend.new_fs(), fail_on=[DENIED])
    future = ce.publish_async(_source(tmp_path, 1), s3_backend.base, filesystem=denied)
    with pytest.raises(ce.PermissionDeniedError, match="permission denied to upload"):
        future.result(timeout=60)
    # Reported once by result(): the next submission is accepted and commits.
    ok = ce.publish_async(
        _source(tmp_path, 2), s3_backend.base, storage_options=s3_backend.storage_options
    )
    assert ok.result(timeout=60).version > 0
    assert len(ce.list_exports(s3_backend.base, storage_options=s3_backend.storage_options)) == 1


def test_failure_is_raised_at_the_next_submission(s3_backend: Backend, tmp_path: Path) -> None:
    denied = FaultyFileSystem(s3_backend.new_fs(), fail_on=[DENIED])
    failed = ce.publish_async(_source(tmp_path, 1), s3_backend.base, filesystem=denied)
    assert wait_all(60) == []  # waits without reporting the outcome
    opts = s3_backend.storage_options
    with pytest.raises(ce.PublishFailedError, match=r"src-1.*not queued") as caught:
        ce.publish_async(_source(tmp_path, 2), s3_backend.base, storage_options=opts)
    assert isinstance(caught.value.__cause__, ce.PermissionDeniedError)
    assert failed.done() and ce.list_exports(s3_backend.base, storage_options=opts) == []
    # Raised once; a later submission to the same base goes through.
    assert ce.publish_async(_source(tmp_path, 2), s3_backend.base, storage_options=opts).result(60)
    # Another base never sees this base's failure.
    other = s3_backend.join("..", "other")
    assert ce.publish_async(_source(tmp_path, 3), other, storage_options=opts).result(60)


def test_arguments_are_checked_at_submission(tmp_path: Path) -> None:
    with pytest.raises(ce.InvalidArgumentError, match="max_in_flight"):
        ce.publish_async(_source(tmp_path, 1), str(tmp_path / "x"), max_in_flight=0)
    with pytest.raises(ce.InvalidArgumentError, match="base"):
        ce.publish_async(_source(tmp_path, 1), "")
    with pytest.raises(ce.InvalidArgumentError, match="exit timeout"):
        set_exit_timeout(-1)
    bad = ce.publish_async(tmp_path / "missing", str(tmp_path / "x"))
    with pytest.raises(ce.InvalidSourceError):
        bad.result(timeout=30)


EXIT_SCRIPT = textwrap.dedent(
    """
    import json, logging, sys, fsspec
    from cloud_exporter import publish_async
    from cloud_exporter.asynchronous import set_exit_timeout
    from cloud_exporter.testing import FailOn, FaultyFileSystem

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    case, base, options, sources = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4:]
    inner = fsspec.filesystem("s3", skip_instance_cache=True, **options)
    if case == "fail":
        denied = FailOn(
            predicate=lambda method, path: method in ("put_file", "pipe_file")
            and not path.endswith(".claim"),
            error=lambda: PermissionError(13, "denied"),
            times=None,
        )
        fs = FaultyFileSystem(inner, fail_on=[denied])
        set_exit_timeout(60)
    elif case == "lost":
        fs = FaultyFileSystem(inner, latency=1.0)
        set_exit_timeout(0.5)
    else:
        fs = FaultyFileSystem(inner, latency=0.05)
        set_exit_timeout(60)
    for source in sources:
        publish_async(source, base, filesystem=fs)
    print("submitted", flush=True)  # and exit without waiting
    """
)


def _run_exit_case(case: str, backend: Backend, tmp_path: Path, n: int) -> str:
    script = tmp_path / "exit_case.py"
    script.write_text(EXIT_SCRIPT)
    sources = [str(_source(tmp_path, i)) for i in range(n)]
    argv = [sys.executable, str(script), case, backend.base, json.dumps(backend.storage_options)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [*argv, *sources], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "submitted"
    return done.stderr


def test_exit_waits_for_unfinished_publishes(s3_backend: Backend, tmp_path: Path) -> None:
    stderr = _run_exit_case("finish", s3_backend, tmp_path, 2)
    assert "waiting up to 60 s for 2 unfinished" in stderr
    stored = ce.list_exports(s3_backend.base, storage_options=s3_backend.storage_options)
    assert len(stored) == 2, stderr
    assert "exit:" not in stderr


def test_exit_logs_a_failure_nobody_saw(s3_backend: Backend, tmp_path: Path) -> None:
    stderr = _run_exit_case("fail", s3_backend, tmp_path, 1)
    assert "FAILED and is not committed" in stderr and "src-0" in stderr
    assert "PermissionDeniedError" in stderr
    assert ce.list_exports(s3_backend.base, storage_options=s3_backend.storage_options) == []


def test_exit_logs_exactly_what_it_could_not_finish(s3_backend: Backend, tmp_path: Path) -> None:
    stderr = _run_exit_case("lost", s3_backend, tmp_path, 2)
    lost = [line for line in stderr.splitlines() if "did not finish within 0.5 s" in line]
    assert len(lost) == 2, stderr
    assert "src-0" in lost[0] and "(uploading)" in lost[0]
    assert "src-1" in lost[1] and "(queued, not started)" in lost[1]
    assert ce.list_exports(s3_backend.base, storage_options=s3_backend.storage_options) == []


def test_cancel_of_a_queued_publish(tmp_path: Path) -> None:
    base = str(tmp_path / "exports")
    gate = threading.Event()
    first = ce.publish_async(_source(tmp_path, 0), base, progress=lambda _: gate.wait(10))
    second = ce.publish_async(_source(tmp_path, 1), base)
    assert second.cancel()
    gate.set()
    first.result(timeout=30)
    assert second.cancelled()
    assert [e.version for e in ce.list_exports(base)] == [first.result().version]


# ---------------------------------------------------------------------------------------------
# Keras adapter (TensorFlow is imported only by these tests)
# ---------------------------------------------------------------------------------------------
def _keras_model() -> Any:
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    return model


def _xy() -> tuple[Any, Any]:
    import numpy as np

    x = np.linspace(-1, 1, 64, dtype="float32").reshape(-1, 2)
    return x, x.sum(axis=1, keepdims=True)


@pytest.mark.tensorflow
def test_keras_fit_returns_only_after_every_slow_export_committed(
    s3_backend: Backend, tmp_path: Path
) -> None:
    import keras

    from cloud_exporter.keras import ExportCallback

    slow = FaultyFileSystem(s3_backend.new_fs(), latency=0.3)  # ~5 s per publish
    temp = tmp_path / "exports-tmp"
    temp.mkdir()
    opts = s3_backend.storage_options
    callback = ExportCallback(
        s3_backend.base, keep=None, filesystem=slow, temp_dir=str(temp), asynchronous=True
    )
    committed_at_epoch_end: list[int] = []

    class Probe(keras.callbacks.Callback):  # runs after the export callback in each epoch
        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            committed_at_epoch_end.append(
                len(ce.list_exports(s3_backend.base, storage_options=opts))
            )

    x, y = _xy()
    _keras_model().fit(x, y, epochs=3, batch_size=16, verbose=0, callbacks=[callback, Probe()])
    assert committed_at_epoch_end[-1] < 3  # training went on while uploads were running
    stored = ce.list_exports(s3_backend.base, storage_options=opts)
    assert [e.metadata["epoch"] for e in stored] == [1, 2, 3]
    assert [i.version for i in callback.published] == [e.version for e in stored]
    for export in stored:
        ce.verify_export(s3_backend.base, export.version, deep=True, storage_options=opts)
    assert list(temp.iterdir()) == []  # the adapter removed each export's local copy


@pytest.mark.tensorflow
def test_keras_on_train_end_raises_a_failed_export(s3_backend: Backend, tmp_path: Path) -> None:
    from cloud_exporter.keras import ExportCallback

    denied = FaultyFileSystem(s3_backend.new_fs(), fail_on=[DENIED])
    temp = tmp_path / "exports-tmp"
    temp.mkdir()
    callback = ExportCallback(
        s3_backend.base, filesystem=denied, temp_dir=str(temp), asynchronous=True
    )
    x, y = _xy()
    # (Keras re-raises callback errors "from None": the cause is named in the message.)
    with pytest.raises(ce.PublishFailedError, match=r"1 of 1 .*PermissionDeniedError"):
        _keras_model().fit(x, y, epochs=1, verbose=0, callbacks=[callback])
    assert callback.published == [] and list(temp.iterdir()) == []


@pytest.mark.tensorflow
def test_keras_publish_model_asynchronous_returns_the_future(
    backend: Backend, tmp_path: Path
) -> None:
    from cloud_exporter.keras import publish_model

    temp = tmp_path / "exports-tmp"
    temp.mkdir()
    opts = backend.storage_options
    future = publish_model(
        _keras_model(), backend.base, temp_dir=str(temp), asynchronous=True, storage_options=opts
    )
    info = future.result(timeout=120)
    assert list(temp.iterdir()) == []
    ce.verify_export(backend.base, info.version, deep=True, storage_options=opts)
