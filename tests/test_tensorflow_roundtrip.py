"""A real SavedModel survives the round trip: publish, download, tf.saved_model.load, predict."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import cloud_exporter as ce

tf = pytest.importorskip("tensorflow", reason="the main venv installs TensorFlow; CI runs this")
from cloud_exporter.cli_demo import build_model  # noqa: E402

pytestmark = pytest.mark.tensorflow


@pytest.fixture(scope="module")
def real_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tf") / "model"
    build_model(str(path), slope=3.0)
    return path


@pytest.mark.parametrize("mode", ["staged", "direct"])
def test_published_model_loads_and_predicts(backend, real_model, tmp_path, mode):
    info = ce.publish(real_model, backend.base, mode=mode, filesystem=backend.fs)
    local = backend.download(info.uri, tmp_path / "download")
    loaded = tf.saved_model.load(str(local))
    y = loaded.signatures["serving_default"](x=tf.constant([2.0, -1.0]))["y"].numpy()
    assert y.tolist() == [7.0, -2.0]


def test_demo_command_publishes_verifies_and_loads(tmp_path):
    base = tmp_path / "demo"
    out = subprocess.run(
        [sys.executable, "-m", "cloud_exporter", "demo", "--base", str(base)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert "verified 3 exports" in out.stdout
    assert "y(2.0) = 9" in out.stdout  # the 4th model: slope 4, bias 1
    assert len(ce.list_exports(str(base))) == 3
