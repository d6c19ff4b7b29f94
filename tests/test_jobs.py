"""cloud_exporter.jobs: export base resolution, publisher detection, promotion to serving places."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
from fsspec.implementations.memory import MemoryFileSystem
from savedmodels import fake_saved_model, tree
from servers import Backend

from cloud_exporter import InvalidArgumentError, list_exports, publish, verify_export
from cloud_exporter.errors import CorruptExportError, VersionConflictError
from cloud_exporter.jobs import (
    PENDING_NAME,
    ExportBaseNotFoundError,
    default_export_base,
    detect_platform,
    finalize_model_dir,
    is_publisher,
    promote,
    read_promoted,
    sagemaker_hyperparameters,
    select_export,
    vertex_artifact_uri,
)
from cloud_exporter.layout import MARKER_NAME
from cloud_exporter.testing import FaultyFileSystem

MARKER = MARKER_NAME


# ---------------------------------------------------------------------------------------------
# Where to export
# ---------------------------------------------------------------------------------------------
def test_default_export_base_prefers_explicit_then_vertex_then_sagemaker() -> None:
    env = {"AIP_MODEL_DIR": "gs://b/out/model/", "SM_MODEL_DIR": "/opt/ml/model"}
    assert default_export_base("s3://b/x/", environ=env) == "s3://b/x"
    assert default_export_base(environ=env) == "gs://b/out/model"
    assert default_export_base(environ={"SM_MODEL_DIR": "/opt/ml/model"}) == "/opt/ml/model"
    assert default_export_base(environ={"AIP_MODEL_DIR": "", "SM_MODEL_DIR": "/m"}) == "/m"


def test_default_export_base_without_any_source_is_a_typed_error() -> None:
    with pytest.raises(ExportBaseNotFoundError, match="AIP_MODEL_DIR") as caught:
        default_export_base(None, environ={"AIP_MODEL_DIR": " "})
    assert isinstance(caught.value, InvalidArgumentError)


def test_default_export_base_reads_the_process_environment(monkeypatch) -> None:
    monkeypatch.delenv("AIP_MODEL_DIR", raising=False)
    monkeypatch.setenv("SM_MODEL_DIR", "/opt/ml/model")
    assert default_export_base() == "/opt/ml/model"
    assert detect_platform() == "sagemaker"
    monkeypatch.setenv("AIP_MODEL_DIR", "gs://b/m/")
    assert default_export_base() == "gs://b/m"
    assert detect_platform() == "vertex"
    assert detect_platform({}) is None


def test_sagemaker_hyperparameters() -> None:
    assert sagemaker_hyperparameters({}) == {}
    assert sagemaker_hyperparameters({"SM_HPS": '{"epochs": 3}'}) == {"epochs": 3}
    with pytest.raises(InvalidArgumentError):
        sagemaker_hyperparameters({"SM_HPS": "[1]"})
    with pytest.raises(InvalidArgumentError):
        sagemaker_hyperparameters({"SM_HPS": "{"})


@pytest.mark.parametrize(
    "raw",
    ["[" * 100_000 + "]" * 100_000, '{"a": ' * 70 + "1" + "}" * 70, '{"x": NaN}', '{"a": 1'],
    ids=["deeper-than-the-parser", "deeper-than-64", "nan", "truncated"],
)
def test_hostile_environment_json_is_a_typed_error(monkeypatch, raw: str) -> None:
    """TF_CONFIG and SM_HPS are bounded like JSON read from storage: never a RecursionError."""
    with pytest.raises(InvalidArgumentError, match="SM_HPS"):
        sagemaker_hyperparameters({"SM_HPS": raw})
    monkeypatch.setenv("TF_CONFIG", raw)
    with pytest.raises(InvalidArgumentError, match="TF_CONFIG"):
        is_publisher()


# ---------------------------------------------------------------------------------------------
# Who publishes
# ---------------------------------------------------------------------------------------------
def _tf_config(task_type: str, index: int, jobs: tuple[str, ...] = ("chief", "worker")) -> str:
    cluster = {job: [f"host-{job}-{i}:2222" for i in range(2)] for job in jobs}
    return json.dumps({"cluster": cluster, "task": {"type": task_type, "index": index}})


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ("", True),
        (json.dumps({"cluster": {}, "task": {}}), True),
        (_tf_config("chief", 0), True),
        (_tf_config("worker", 0), False),
        (_tf_config("worker", 1), False),
        (_tf_config("worker", 0, ("worker",)), True),
        (_tf_config("worker", 1, ("worker",)), False),
        (_tf_config("master", 0, ("master", "worker")), True),
        (_tf_config("evaluator", 0, ("chief", "worker", "evaluator")), True),
        (_tf_config("ps", 0, ("chief", "worker", "ps")), False),
    ],
)
def test_is_publisher(config: str, expected: bool) -> None:
    assert is_publisher(config) is expected
    assert is_publisher(json.loads(config) if config else None) is (expected if config else True)


def test_is_publisher_reads_tf_config_and_rejects_malformed(monkeypatch) -> None:
    monkeypatch.setenv("TF_CONFIG", _tf_config("worker", 1))
    assert is_publisher() is False
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(InvalidArgumentError, match="TF_CONFIG"):
        is_publisher()
    with pytest.raises(InvalidArgumentError, match="task"):
        is_publisher({"cluster": {"worker": ["a:1"]}})


# ---------------------------------------------------------------------------------------------
# Promotion
# ---------------------------------------------------------------------------------------------
def _publish_two(backend: Backend, tmp_path: Path) -> tuple[int, int]:
    opts = backend.storage_options
    note = tmp_path / "note.txt"
    note.write_text("only in the first export")
    a = publish(
        fake_saved_model(tmp_path / "a", 1),
        backend.base,
        metadata={"loss": 2.0},
        assets_extra={"note.txt": str(note)},
        storage_options=opts,
    )
    b = publish(
        fake_saved_model(tmp_path / "b", 2),
        backend.base,
        metadata={"loss": 3.0},
        storage_options=opts,
    )
    return a.version, b.version


def _files(backend: Backend, uri: str) -> dict[str, bytes]:
    fs = backend.new_fs()
    root = backend.strip(uri).rstrip("/")
    return {p[len(root) + 1 :]: fs.cat_file(p) for p in fs.find(root)}


def test_promote_versioned_copies_an_export_to_a_serving_base(
    backend: Backend, tmp_path: Path
) -> None:
    first, second = _publish_two(backend, tmp_path)
    serving = f"{backend.scratch}/serving"
    opts = backend.storage_options
    info = promote(backend.base, serving, storage_options=opts)
    assert info.version == second
    assert info.uri.rstrip("/").endswith(f"serving/{second}")
    assert _files(backend, info.uri) == _files(backend, f"{backend.base}/{second}")
    assert verify_export(serving, second, deep=True, storage_options=opts).metadata == {"loss": 3.0}
    assert promote(backend.base, serving, storage_options=opts).version == second  # idempotent
    best = promote(backend.base, serving, best=("loss", "min"), storage_options=opts)
    assert best.version == first
    assert [e.version for e in list_exports(serving, storage_options=opts)] == [first, second]
    assert not any(".cloud-exporter-staging" in p for p in _files(backend, serving))


def test_promote_flat_puts_saved_model_directly_under_the_uri(
    backend: Backend, tmp_path: Path
) -> None:
    first, second = _publish_two(backend, tmp_path)
    flat = f"{backend.scratch}/artifact"
    opts = backend.storage_options
    info = promote(backend.base, flat, flat=True, version=first, storage_options=opts)
    assert info.version == first
    files = _files(backend, flat)
    source = _files(backend, f"{backend.base}/{first}")
    assert files == source  # marker included, byte for byte
    assert "saved_model.pb" in files and "assets.extra/note.txt" in files
    # Replace it: files of the old export that the new one lacks disappear.
    info = promote(backend.base, flat, flat=True, version=second, storage_options=opts)
    assert info.version == second
    assert read_promoted(flat, storage_options=opts).version == second
    assert _files(backend, flat) == _files(backend, f"{backend.base}/{second}")
    assert vertex_artifact_uri(flat, storage_options=opts) == info.uri
    assert vertex_artifact_uri(backend.base, version=first, storage_options=opts).endswith(
        f"/{first}"
    )


def test_promote_flat_refuses_a_location_it_does_not_own(tmp_path: Path) -> None:
    base = str(tmp_path / "exports")
    publish(fake_saved_model(tmp_path / "src"), base)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "README").write_text("not ours")
    with pytest.raises(InvalidArgumentError, match="no promotion put there"):
        promote(base, str(foreign), flat=True)
    assert tree(foreign) == {"README": b"not ours"}


def test_promote_flat_finishes_after_a_crashed_promotion(tmp_path: Path) -> None:
    base = str(tmp_path / "exports")
    version = publish(fake_saved_model(tmp_path / "src"), base).version
    flat = tmp_path / "flat"
    (flat / "variables").mkdir(parents=True)
    (flat / PENDING_NAME).write_text("{}")  # a promotion died half-way: no marker
    (flat / "variables" / "variables.index").write_bytes(b"half")
    (flat / "leftover.bin").write_bytes(b"x")
    assert read_promoted(str(flat)) is None
    assert promote(base, str(flat), flat=True).version == version
    assert tree(flat) == tree(Path(base) / str(version))


def test_flat_promotion_is_one_at_a_time(tmp_path: Path) -> None:
    base = str(tmp_path / "exports")
    publish(fake_saved_model(tmp_path / "src"), base)
    flat = tmp_path / "flat"
    flat.mkdir()
    note = {"source": "elsewhere", "version": 1, "started": time.time(), "id": "x"}
    (flat / PENDING_NAME).write_text(json.dumps(note))  # a live promotion holds the location
    with pytest.raises(VersionConflictError, match="being promoted"):
        promote(base, str(flat), flat=True)
    assert sorted(p.name for p in flat.iterdir()) == [PENDING_NAME]  # untouched
    info = promote(base, str(flat), flat=True, stale_seconds=0)  # a dead one is taken over
    assert read_promoted(str(flat), deep=True) == info
    assert not (flat / PENDING_NAME).exists()


def test_promote_orders_writes_for_serving_safety(tmp_path: Path) -> None:
    """Versioned: others, saved_model.pb, marker. Flat replace: marker and saved_model.pb go
    first, the new saved_model.pb and marker come last."""
    fs = FaultyFileSystem(MemoryFileSystem())
    prefix = f"/t{tmp_path.name}"
    for seed in (1, 2):
        publish(fake_saved_model(tmp_path / f"m{seed}", seed), f"{prefix}/exports", filesystem=fs)
    versions = [e.version for e in list_exports(f"{prefix}/exports", filesystem=fs)]

    fs.reset_counters()
    promote(f"{prefix}/exports", f"{prefix}/serving", filesystem=fs)
    writes = [p.rsplit("/", 1)[-1] for m, p in fs.mutations() if m in ("cp_file", "pipe_file")]
    writes = [w for w in writes if not w.endswith(".claim")]
    assert writes[-2:] == ["saved_model.pb", MARKER]
    assert len(writes) == 6  # 4 files, saved_model.pb, marker

    promote(f"{prefix}/exports", f"{prefix}/flat", flat=True, version=versions[0], filesystem=fs)
    fs.reset_counters()
    promote(f"{prefix}/exports", f"{prefix}/flat", flat=True, version=versions[1], filesystem=fs)
    names = [(m, p.rsplit("/", 1)[-1]) for m, p in fs.mutations()]
    deletes = [n for m, n in names if m in ("rm", "rm_file", "_rm")]
    assert deletes[:2] == [MARKER, "saved_model.pb"]  # after the pending note
    copies = [n for m, n in names if m in ("cp_file", "pipe_file")]
    assert copies[0] == PENDING_NAME
    assert copies[-2:] == ["saved_model.pb", MARKER]
    assert names[-1][1] == PENDING_NAME  # its removal ends the promotion


def test_promote_rejects_bad_targets(tmp_path: Path) -> None:
    base = str(tmp_path / "exports")
    with pytest.raises(InvalidArgumentError, match="no committed export"):
        promote(base, str(tmp_path / "serving"))
    publish(fake_saved_model(tmp_path / "src"), base)
    with pytest.raises(InvalidArgumentError, match="contain one another"):
        promote(base, f"{base}/serving")
    with pytest.raises(InvalidArgumentError, match="same store"):
        promote(base, "memory://elsewhere/serving")
    with pytest.raises(InvalidArgumentError, match="version= or best="):
        select_export(base, version=1, best=("loss", "min"))
    with pytest.raises(InvalidArgumentError, match="records the metric"):
        select_export(base, best=("loss", "min"))
    with pytest.raises(InvalidArgumentError, match="best must be"):
        select_export(base, best=("loss", "lowest"))


def test_read_promoted_detects_a_tampered_location(tmp_path: Path) -> None:
    base = str(tmp_path / "exports")
    publish(fake_saved_model(tmp_path / "src"), base)
    flat = tmp_path / "flat"
    promote(base, str(flat), flat=True)
    index = flat / "variables" / "variables.index"
    index.write_bytes(b"x" * index.stat().st_size)  # same size: only a deep read notices
    assert read_promoted(str(flat)) is not None
    with pytest.raises(CorruptExportError, match="checksum"):
        read_promoted(str(flat), deep=True)
    index.write_bytes(b"different length")
    with pytest.raises(CorruptExportError, match="does not match"):
        read_promoted(str(flat))


# ---------------------------------------------------------------------------------------------
# SageMaker model dir
# ---------------------------------------------------------------------------------------------
def test_finalize_model_dir_leaves_only_version_dirs_for_model_tar_gz(tmp_path: Path) -> None:
    model_dir = tmp_path / "opt-ml-model"
    versions = [
        publish(fake_saved_model(tmp_path / f"m{i}", i), str(model_dir)).version for i in range(3)
    ]
    assert finalize_model_dir(str(model_dir), keep=2) == versions[1:]
    assert sorted(p.name for p in model_dir.iterdir()) == [str(v) for v in versions[1:]]
    archive = tmp_path / "model.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:  # what SageMaker does with SM_MODEL_DIR
        for child in model_dir.iterdir():
            tar.add(child, arcname=child.name)
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    for version in versions[1:]:
        assert f"{version}/saved_model.pb" in names
        assert f"{version}/variables/variables.index" in names


def test_importing_jobs_does_not_import_tensorflow() -> None:
    code = "import sys, cloud_exporter.jobs; print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
