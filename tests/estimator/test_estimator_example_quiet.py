"""examples/estimator_evalspec.py keeps TF 2.15's deprecation warnings out unless --verbose."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip(
    "tensorflow_estimator",
    reason="needs TF 2.15 with tensorflow-estimator: run tests/estimator in the estimator venv",
)

pytestmark = [pytest.mark.estimator, pytest.mark.tensorflow]
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "estimator_evalspec.py"


def test_estimator_example_output_is_only_its_summary(tmp_path: Path) -> None:
    argv = [
        sys.executable,
        str(EXAMPLE),
        "--base",
        str(tmp_path / "exports"),
        "--model-dir",
        str(tmp_path / "model"),
        "--steps",
        "20",
    ]
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr == ""  # TF 2.15 prints dozens of deprecation warnings when not quieted
    own = ("latest: ", "best: ", "final: ", "{")
    assert all(line.startswith(own) for line in done.stdout.strip().splitlines()), done.stdout
