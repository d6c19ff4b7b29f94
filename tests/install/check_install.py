"""Install as a user does, from the wheel and sdist built from this checkout.

Run by ``scripts/install_test.sh`` (not collected by the main pytest run: the file name does not
start with ``test_``), which builds the distributions and prepares two cached venvs:

* CLOUD_EXPORTER_TF215_PYTHON: tensorflow-cpu 2.15.1 + tensorflow-estimator 2.15.0 installed
  first, then ``<wheel>[gcs,s3,estimator]``; CLOUD_EXPORTER_TF215_BASELINE holds the
  TF/numpy/protobuf versions from before our install;
* CLOUD_EXPORTER_TFCUR_PYTHON: current tensorflow-cpu (Keras 3) first, then ``<wheel>[gcs,s3]``;
* CLOUD_EXPORTER_CORE_PYTHON: ``pip install <sdist>`` alone (no extras, no TensorFlow).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from servers import Backend

HERE = Path(__file__).resolve().parent
PINNED = ("tensorflow-cpu", "numpy", "protobuf")


def _python(var: str) -> str:
    path = os.environ.get(var)
    assert path and os.access(path, os.X_OK), f"{var} is not set: run scripts/install_test.sh"
    return path


def _run(python: str, script: str, *args: str, cwd: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    done = subprocess.run(
        [python, str(HERE / script), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _run_job(python: str, script: str, backend: Backend, base: str, workdir: Path) -> dict:
    """An install job publishing to ``base`` on the backend's server (argv: see the job)."""
    options = json.dumps(backend.storage_options)
    return _run(python, script, base, options, str(workdir), cwd=workdir)


def _versions(python: str) -> dict[str, str]:
    out = subprocess.run(
        [python, "-m", "pip", "list", "--format=json"], capture_output=True, text=True, check=True
    ).stdout
    return {p["name"].lower(): p["version"] for p in json.loads(out) if p["name"].lower() in PINNED}


def test_tf215_versions_unchanged_by_our_install() -> None:
    python = _python("CLOUD_EXPORTER_TF215_PYTHON")
    baseline = json.loads(Path(os.environ["CLOUD_EXPORTER_TF215_BASELINE"]).read_text())
    assert _versions(python) == baseline
    assert baseline["protobuf"].startswith("4.")  # what TF 2.15 needs
    check = subprocess.run([python, "-m", "pip", "check"], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout


def test_tf215_train_and_evaluate_to_object_store(server_backend: Backend, tmp_path: Path) -> None:
    python = _python("CLOUD_EXPORTER_TF215_PYTHON")
    base = f"{server_backend.scratch}/latest"
    got = _run_job(python, "tf215_job.py", server_backend, base, tmp_path)
    assert got["returned_bytes"] is True  # as the stock exporter
    assert got["steps"] == [20, 30] and len(got["versions"]) == 2  # exports_to_keep=2
    assert got["exported"] == [got["newest"]]
    assert got["predictions"] == pytest.approx([1.0, 2.0], abs=0.4)  # learned y = 2x + 1


def test_current_tf_keras_callback_to_object_store(server_backend: Backend, tmp_path: Path) -> None:
    python = _python("CLOUD_EXPORTER_TFCUR_PYTHON")
    base = f"{server_backend.scratch}/keras"
    got = _run_job(python, "keras_job.py", server_backend, base, tmp_path)
    assert got["keras"].startswith("3.")
    assert got["published"] == 3 and len(got["versions"]) == 2  # every 10 of 30 epochs, keep=2
    assert got["predictions"] == pytest.approx([1.0, 2.0], abs=0.3)


def test_core_install_publishes_locally_and_names_missing_extras(tmp_path: Path) -> None:
    python = _python("CLOUD_EXPORTER_CORE_PYTHON")
    got = _run(python, "core_job.py", str(tmp_path), cwd=tmp_path)
    assert got["listed"] == got["published"][1:]  # keep=2
    for key, hint in (
        ("s3", "cloud-exporter[s3]"),
        ("gcs", "cloud-exporter[gcs]"),
        ("estimator", "cloud-exporter[gcs,s3,estimator]"),
    ):
        assert got[key] is not None and hint in got[key], got[key]
        assert "\n" not in got[key]
