"""examples/estimator_evalspec.py runs against the local GCS server and publishes what it says."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from servers import Backend

pytest.importorskip(
    "tensorflow_estimator",
    reason="needs TF 2.15 with tensorflow-estimator: run tests/estimator in the estimator venv",
)

from cloud_exporter import list_exports, verify_export

pytestmark = [pytest.mark.estimator, pytest.mark.tensorflow]
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "estimator_evalspec.py"


def test_estimator_evalspec_example(gcs_backend: Backend, tmp_path: Path) -> None:
    options = json.dumps(gcs_backend.storage_options)
    argv = [
        sys.executable,
        str(EXAMPLE),
        "--base",
        gcs_backend.base,
        "--model-dir",
        str(tmp_path / "model"),
        "--steps",
        "30",
    ]
    env = {**os.environ, "CLOUD_EXPORTER_STORAGE_OPTIONS": options, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    opts = gcs_backend.storage_options
    for name, count in (("latest", 2), ("best", 2), ("final", 1)):
        exports = list_exports(f"{gcs_backend.base}/{name}", storage_options=opts)
        assert [e.version for e in exports] == [row["version"] for row in summary[name]]
        assert len(exports) == count
        for export in exports:
            info = verify_export(f"{gcs_backend.base}/{name}", export.version, storage_options=opts)
            assert "saved_model.pb" in {f.path for f in info.files}
    assert summary["final"][0]["global_step"] == 30
