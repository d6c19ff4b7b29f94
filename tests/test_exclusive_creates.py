"""Stores that do not keep create-only writes exclusive are found before anything is published.

An S3-compatible store that accepts ``If-None-Match: *`` and overwrites anyway would let two
writers claim one version. The server here is moto run so that it drops that header
(``servers.moto_server(ignore_if_none_match=True)``), i.e. such a store; the honest one is the
session's moto.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import fsspec
import pytest
import servers
from savedmodels import fake_saved_model

import cloud_exporter as ce
from cloud_exporter import storage_exclusive
from cloud_exporter.layout import CLAIM_SUFFIX
from cloud_exporter.testing import FailOn, FaultyFileSystem

BUCKET = "overwriting-bucket"


@pytest.fixture(scope="module")
def overwriting_s3() -> Iterator[dict]:
    """Storage options of an S3 server that ignores If-None-Match."""
    with servers.moto_server(ignore_if_none_match=True) as url:
        options = servers.s3_storage_options(url)
        servers.create_bucket("s3", options, BUCKET)
        yield options


@pytest.fixture
def source(tmp_path: Path) -> Path:
    return fake_saved_model(tmp_path / "model", seed=3)


def _claim_creates(faulty: FaultyFileSystem) -> list[str]:
    """The claim paths of every create sent through ``faulty``, refused ones included."""
    return [
        c.paths[0]
        for c in faulty.calls
        if c.method == "pipe_file" and c.paths[0].endswith(CLAIM_SUFFIX)
    ]


def test_a_store_that_overwrites_creates_is_refused_and_left_clean(
    overwriting_s3, source, monkeypatch
):
    monkeypatch.setattr(storage_exclusive, "S3_CREATES_EXCLUSIVE", {})
    base = f"s3://{BUCKET}/refused [1] ü/exports"
    fs = fsspec.filesystem("s3", skip_instance_cache=True, **overwriting_s3)
    with pytest.raises(ce.StorageError, match="ignores If-None-Match") as raised:
        ce.publish(source, base, filesystem=fs)
    assert base.split("/exports")[0] in str(raised.value)
    assert fs.find(f"{BUCKET}/refused [1] ü") == []  # no claim, no staging, no version
    assert ce.list_exports(base, filesystem=fs) == []
    # Known now: the next create-only write is refused before it is sent.
    faulty = FaultyFileSystem(fs)
    with pytest.raises(ce.StorageError, match="ignores If-None-Match"):
        ce.publish(source, base, filesystem=faulty)
    assert [c.method for c in faulty.calls if c.mutating] == []
    with pytest.raises(ce.StorageError, match="ignores If-None-Match"):
        ce.publish(source, base, filesystem=faulty, mode="direct")


def test_an_honest_store_is_asked_once_per_bucket(s3_backend, source, monkeypatch):
    monkeypatch.setattr(storage_exclusive, "S3_CREATES_EXCLUSIVE", {})
    first = FaultyFileSystem(s3_backend.new_fs())
    ce.publish(source, s3_backend.base, filesystem=first)
    claims = _claim_creates(first)
    assert len(claims) == 2 and claims[0] == claims[1]  # the create, then the refused repeat
    assert list(storage_exclusive.S3_CREATES_EXCLUSIVE.values()) == [True]
    second = FaultyFileSystem(s3_backend.new_fs())
    info = ce.publish(source, s3_backend.base, filesystem=second)
    assert len(_claim_creates(second)) == 1
    assert ce.verify_export(s3_backend.base, info.version, deep=True, filesystem=s3_backend.fs)


def test_the_cli_says_so_in_one_line_with_exit_6(overwriting_s3, source):
    import subprocess
    import sys

    flags = [f"-o{key}={value}" for key, value in overwriting_s3.items() if key != "client_kwargs"]
    flags += [f"-oclient_kwargs.{k}={v}" for k, v in overwriting_s3["client_kwargs"].items()]
    base = f"s3://{BUCKET}/cli/exports"
    done = subprocess.run(
        [sys.executable, "-m", "cloud_exporter", "publish", str(source), base, *flags],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 6, done.stderr
    assert done.stderr.count("\n") == 1 and "ignores If-None-Match" in done.stderr


def test_a_claim_deleted_between_the_create_and_its_repeat_is_no_false_alarm(
    s3_backend, source, monkeypatch
):
    """A pruner with no grace may delete a claim in the moment between the create and its
    repeat: the repeat then succeeds on an honest store. One more repeat, refused, tells."""
    monkeypatch.setattr(storage_exclusive, "S3_CREATES_EXCLUSIVE", {})

    def pruner_deletes(called: str, path: str) -> bool:
        if called == "pipe_file" and path.endswith(CLAIM_SUFFIX) and not deleted:
            deleted.append(path)
            s3_backend.new_fs().rm_file(path)
        return False

    deleted: list[str] = []
    repeat = FailOn(method="pipe_file", nth=2, predicate=pruner_deletes, times=None)
    faulty = FaultyFileSystem(s3_backend.new_fs(), fail_on=[repeat])
    info = ce.publish(source, s3_backend.base, filesystem=faulty)
    assert deleted and len(_claim_creates(faulty)) == 3
    assert list(storage_exclusive.S3_CREATES_EXCLUSIVE.values()) == [True]
    assert ce.verify_export(s3_backend.base, info.version, deep=True, filesystem=s3_backend.fs)
