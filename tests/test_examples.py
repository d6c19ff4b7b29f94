"""The examples run as scripts against the local S3/GCS servers and leave the promised layouts.

(examples/estimator_evalspec.py needs TF 2.15: its test is tests/estimator/.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest
from servers import Backend

pytest.importorskip("keras", minversion="3", reason="the examples need Keras 3 (the main venv)")

from cloud_exporter import list_exports, verify_export
from cloud_exporter.layout import parse_version

pytestmark = pytest.mark.tensorflow
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run_example(name: str, *args: str, env: dict[str, str] | None = None) -> Any:
    """Run examples/<name> with ``args``; return the JSON document it prints last."""
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    argv = [sys.executable, str(EXAMPLES / name), *args]
    done = subprocess.run(argv, env=full_env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{name} failed:\n{done.stderr[-4000:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def children(backend: Backend, uri: str) -> dict[str, set[str]]:
    """{child name: names directly inside it} below ``uri`` (fresh listing)."""
    fs = backend.new_fs()
    root = backend.strip(uri).rstrip("/")
    found: dict[str, set[str]] = {}
    for path in fs.find(root):
        head, _, rest = path[len(root) + 1 :].partition("/")
        found.setdefault(head, set()).add(rest.split("/", 1)[0])
    return found


def assert_tf_serving_layout(backend: Backend, uri: str) -> list[int]:
    """Integer version directories, each with saved_model.pb directly inside; returns them."""
    layout = children(backend, uri)
    versions = sorted(v for name in layout if (v := parse_version(name)) is not None)
    assert versions
    for version in versions:
        assert {"saved_model.pb", "variables"} <= layout[str(version)]
    return versions


def test_keras_callback_example(server_backend: Backend) -> None:
    options = json.dumps(server_backend.storage_options)
    rows = run_example(
        "keras_callback.py",
        "--base",
        server_backend.base,
        "--storage-options",
        options,
        "--epochs",
        "3",
        "--keep",
        "2",
    )
    assert [row["epoch"] for row in rows] == [2, 3]
    versions = assert_tf_serving_layout(server_backend, server_backend.base)
    assert versions == [row["version"] for row in rows]
    for version in versions:
        verify_export(server_backend.base, version, storage_options=server_backend.storage_options)


@pytest.mark.parametrize("flow", ["versions-in-model-dir", "exports-elsewhere"])
def test_vertex_custom_job_example(gcs_backend: Backend, flow: str) -> None:
    model_dir = f"{gcs_backend.scratch}/job-output/model/"  # AIP_MODEL_DIR ends with a slash
    env = {
        "AIP_MODEL_DIR": model_dir,
        "CLOUD_EXPORTER_STORAGE_OPTIONS": json.dumps(gcs_backend.storage_options),
    }
    if flow == "versions-in-model-dir":
        artifact = f"{gcs_backend.scratch}/serving"
        result = run_example("vertex_custom_job.py", "--promote-to", artifact, env=env)
        base = model_dir.rstrip("/")
    else:  # the artifact URI is fixed: AIP_MODEL_DIR itself gets saved_model.pb
        base, artifact = gcs_backend.base, model_dir
        result = run_example(
            "vertex_custom_job.py", "--base", base, "--promote-to", artifact, env=env
        )
    assert result["base"] == base
    versions = assert_tf_serving_layout(gcs_backend, base)
    assert result["artifact_uri"].rstrip("/").endswith(f"/{versions[-1]}")
    flat = children(gcs_backend, artifact)
    assert "saved_model.pb" in flat and "variables" in flat  # directly under the artifact URI
    assert not [name for name in flat if parse_version(name) is not None]
    exports = list_exports(base, storage_options=gcs_backend.storage_options)
    best = min(exports, key=lambda e: e.metadata["metrics"]["val_loss"])
    assert result["promoted"]["version"] == best.version
    assert result["promoted_artifact_uri"].rstrip("/") == result["promoted"]["uri"].rstrip("/")


def test_sagemaker_entry_point_example(tmp_path: Path) -> None:
    model_dir = tmp_path / "opt" / "ml" / "model"
    model_dir.mkdir(parents=True)
    env = {"SM_MODEL_DIR": str(model_dir), "SM_HPS": json.dumps({"epochs": 2, "keep": 1})}
    result = run_example(
        "sagemaker_entry_point.py", "--epochs", "2", "--model_dir", "s3://ckpt/job", env=env
    )
    assert result["model_dir"] == str(model_dir)
    assert [p.name for p in model_dir.iterdir()] == [str(v) for v in result["versions"]]
    assert len(result["versions"]) == 1
    archive = tmp_path / "model.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:  # what SageMaker uploads when the job ends
        for child in model_dir.iterdir():
            tar.add(child, arcname=child.name)
    with tarfile.open(archive) as tar:
        tops = {name.split("/", 1)[0] for name in tar.getnames()}
        names = set(tar.getnames())
    version = result["versions"][0]
    assert tops == {str(version)}
    assert f"{version}/saved_model.pb" in names


def test_publish_and_prune_example(s3_backend: Backend) -> None:
    options = json.dumps(s3_backend.storage_options)
    result = run_example(
        "publish_and_prune.py", "--base", s3_backend.base, "--storage-options", options
    )
    remaining = result["remaining"]
    assert [row["loss"] for row in remaining] == [0.4, 0.6, 0.7]  # best + newest two
    assert result["latest"] == remaining[-1]["version"]
    assert assert_tf_serving_layout(s3_backend, s3_backend.base) == [
        r["version"] for r in remaining
    ]
