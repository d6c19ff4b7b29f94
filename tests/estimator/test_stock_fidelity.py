"""Stock fidelity of the estimator exporters: switching in place over stock exports, return
types, assets_extra from TensorFlow file systems, non-RunConfig estimators, unknown schemes."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import pytest

pytest.importorskip(
    "tensorflow_estimator",
    reason="needs TF 2.15 with tensorflow-estimator: run tests/estimator in the estimator venv",
)
import fsspec
import tensorflow as tf
from estimator_double import make_double, write_saved_model
from servers import Backend

from cloud_exporter import InvalidArgumentError, list_exports, verify_export
from cloud_exporter.estimator import BestExporter, FinalExporter, LatestExporter

pytestmark = [pytest.mark.estimator, pytest.mark.tensorflow]


def _fn() -> None:
    return None


def _local_stock_base(tmp_path: Path, count: int) -> tuple[str, list[str]]:
    base = tmp_path / "model" / "export" / "latest"
    base.mkdir(parents=True)
    now = int(time.time())
    names = [str(now - 100 + i) for i in range(count)]
    for name in names:
        write_saved_model(str(base / name))
    return str(base), names


def test_switching_in_place_keeps_as_many_as_stock(tmp_path: Path) -> None:
    """3 stock exports, then 2 of ours with exports_to_keep=2: 2 remain (ours), as stock."""
    base, stock = _local_stock_base(tmp_path, 3)
    litter = {
        "temp-1700000000": "saved_model.pb",  # a stock export in flight
        str(int(stock[0]) - 1): "variables/variables.index",  # 10 digits, not a SavedModel
        ".cloud-exporter-staging": "keep.txt",
        "notes": "README",
    }
    for name, rel in litter.items():
        path = Path(base, name, rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    exporter = LatestExporter("latest", _fn, exports_to_keep=2)
    double = make_double(str(tmp_path / "model"))
    results = [exporter.export(double, base, None, {"loss": 1.0}, False) for _ in range(2)]
    ours = [e.uri.removeprefix("file://").encode() for e in list_exports(base)]
    assert ours == results
    versions = sorted(n for n in os.listdir(base) if n.isdigit() and len(n) == 10)
    assert versions == sorted(
        [str(int(stock[0]) - 1), *(os.path.basename(r) for r in map(bytes.decode, results))]
    )
    for name, rel in litter.items():  # never touched
        assert Path(base, name, rel).read_bytes() == b"x"


def test_stock_exports_newer_than_keep_survive_and_count(tmp_path: Path) -> None:
    base, stock = _local_stock_base(tmp_path, 3)
    exporter = LatestExporter("latest", _fn, exports_to_keep=3)
    exporter.export(make_double(), base, None, {"loss": 1.0}, False)
    left = sorted(n for n in os.listdir(base) if n.isdigit())
    assert left[:2] == stock[1:]  # the oldest stock export went, two stock + ours remain
    assert len(left) == 3


@pytest.mark.servers
def test_switching_in_place_on_object_stores(server_backend: Backend) -> None:
    fs, root = server_backend.new_fs(), server_backend.root
    now = int(time.time())
    stock = [str(now - 50 + i) for i in range(3)]
    local = write_saved_model(os.path.join(os.environ.get("TMPDIR", "/tmp"), f"sm-{now}-x"))
    for name in stock:
        fs.put(local + "/", f"{root}/{name}/", recursive=True)
    fs.pipe_file(f"{root}/temp-{now}/saved_model.pb", b"partial")
    exporter = LatestExporter(
        "latest", _fn, exports_to_keep=2, storage_options=server_backend.storage_options
    )
    for _ in range(2):
        exporter.export(make_double(), server_backend.base, None, {"loss": 1.0}, False)
    names = {p.rstrip("/").rsplit("/", 1)[-1] for p in server_backend.new_fs().ls(root)}
    ours = [
        str(e.version)
        for e in list_exports(server_backend.base, storage_options=server_backend.storage_options)
    ]
    assert names - {".cloud-exporter-staging"} == {*ours, f"temp-{now}"}
    assert len(ours) == 2


def test_export_returns_bytes_like_export_saved_model(tmp_path: Path) -> None:
    for exporter in (LatestExporter("l", _fn), FinalExporter("f", _fn), BestExporter("b", _fn)):
        base = str(tmp_path / exporter.name)
        result = exporter.export(make_double(), base, None, {"loss": 1.0}, True)
        assert isinstance(result, bytes)
        assert os.path.isfile(os.path.join(result.decode(), "saved_model.pb"))


def test_assets_extra_from_tensorflow_and_fsspec_file_systems(tmp_path: Path) -> None:
    payload = bytes(range(256)) * 10
    tf.io.gfile.makedirs("ram://assets")
    with tf.io.gfile.GFile("ram://assets/vocab.bin", "wb") as f:
        f.write(payload)
    fsspec.filesystem("memory").pipe_file("/assets-src/labels.txt", b"a\nb\n")
    local = tmp_path / "local.txt"
    local.write_bytes(b"local")
    assets = {
        "vocab.bin": "ram://assets/vocab.bin",
        "nested/labels.txt": "memory://assets-src/labels.txt",
        "local.txt": str(local),
    }
    exporter = FinalExporter("final", _fn, assets_extra=assets)
    result = exporter.export(make_double(), str(tmp_path / "final"), None, {}, True).decode()
    extra = Path(result, "assets.extra")
    assert (extra / "vocab.bin").read_bytes() == payload
    assert (extra / "nested" / "labels.txt").read_bytes() == b"a\nb\n"
    assert (extra / "local.txt").read_bytes() == b"local"
    verify_export(str(tmp_path / "final"), int(os.path.basename(result)), deep=True)


def test_assets_extra_from_an_unreadable_scheme_names_what_is_missing(tmp_path: Path) -> None:
    exporter = FinalExporter("final", _fn, assets_extra={"a": "hdfs://namenode/a.txt"})
    with pytest.raises(InvalidArgumentError, match=r"hdfs://.*(pyarrow|libhdfs)"):
        exporter.export(make_double(), str(tmp_path / "x"), None, {}, True)
    assert not (tmp_path / "x").exists()


def test_estimator_without_run_config_acts_as_single_chief(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    double = make_double()
    assert not isinstance(double.config, tf.estimator.RunConfig)
    with caplog.at_level(logging.DEBUG, logger="cloud_exporter.estimator"):
        result = LatestExporter("l", _fn).export(double, str(tmp_path / "l"), None, {}, False)
    assert result is not None
    assert "not a RunConfig; acting as the single chief" in caplog.text


def test_model_dir_on_hdfs_names_the_missing_backend(tmp_path: Path) -> None:
    exporter = LatestExporter("l", _fn)
    with pytest.raises(InvalidArgumentError) as caught:
        exporter.export(make_double(), "hdfs://namenode/model/export/l", None, {}, False)
    message = str(caught.value)
    assert "hdfs://" in message and "pyarrow" in message
    assert "cloud-exporter[gcs]" not in message and "\n" not in message
