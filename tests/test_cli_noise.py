"""The demo and the examples keep TensorFlow's log noise out, and end in one line on error."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("keras", minversion="3", reason="the demo and examples need Keras 3")

pytestmark = pytest.mark.tensorflow
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
# Variables that would quiet TensorFlow or pick an export base for us: the runs must not need them.
UNSET = ("TF_CPP_MIN_LOG_LEVEL", "AIP_MODEL_DIR", "SM_MODEL_DIR", "TF_ENABLE_ONEDNN_OPTS")


def run(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in UNSET}
    return subprocess.run(
        [sys.executable, *argv], capture_output=True, text=True, timeout=600, env=env, cwd=cwd
    )


def test_demo_prints_only_its_own_lines(tmp_path):
    done = run(
        "-m",
        "cloud_exporter",
        "demo",
        "--base",
        str(tmp_path / "d"),
        "--count",
        "2",
        "--keep",
        "1",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert done.stdout.count("published file://") == 2
    assert "loaded with TensorFlow: y(2.0) = 5" in done.stdout


def test_vertex_example_without_a_base_ends_in_one_line(tmp_path):
    done = run(str(EXAMPLES / "vertex_custom_job.py"), cwd=tmp_path)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: no export base")
    assert "--base" in done.stderr
    verbose = run(str(EXAMPLES / "vertex_custom_job.py"), "--verbose", cwd=tmp_path)
    assert verbose.returncode == 2 and "Traceback" in verbose.stderr
