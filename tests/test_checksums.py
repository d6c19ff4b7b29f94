"""CRC32C end to end: recorded per file, declared on upload, verified from the store's checksums."""

from __future__ import annotations

import base64
import hashlib
import json
import random
from pathlib import Path

import google_crc32c
import pytest
from savedmodels import fake_saved_model

import cloud_exporter as ce
from cloud_exporter import source as source_module
from cloud_exporter.errors import ChecksumMismatchError
from cloud_exporter.layout import MARKER_NAME
from cloud_exporter.source import crc32c_combine
from cloud_exporter.testing import FailOn, FaultyFileSystem

READS = {"open", "cat", "cat_file", "cat_ranges", "get", "get_file", "read_block", "head", "tail"}


@pytest.fixture
def source(tmp_path: Path) -> Path:
    return fake_saved_model(tmp_path / "model", seed=3, shard_bytes=1 << 20)


def _files(source: Path) -> dict[str, bytes]:
    return {
        p.relative_to(source).as_posix(): p.read_bytes() for p in source.rglob("*") if p.is_file()
    }


def _byte_reads(fs: FaultyFileSystem) -> list[tuple[str, tuple[str, ...]]]:
    """Reads of object bytes, the marker excepted."""
    return [
        (c.method, c.paths)
        for c in fs.calls
        if c.method in READS and not all(p.endswith(MARKER_NAME) for p in c.paths)
    ]


def _corrupt(backend, info, relpath: str = "variables/variables.index") -> None:
    path = backend.strip(info.uri) + "/" + relpath
    original = backend.fs.cat_file(path)
    backend.fs.pipe_file(path, bytes(b ^ 0xFF for b in original))  # same size, other bytes


@pytest.mark.parametrize("checksum", ["crc32c", "sha256"])
def test_every_file_records_a_correct_crc32c(backend, source, checksum):
    info = ce.publish(source, backend.base, filesystem=backend.fs, checksum=checksum)
    expected = _files(source)
    assert {f.path for f in info.files} == set(expected)
    for record in info.files:
        data = expected[record.path]
        assert record.crc32c == google_crc32c.Checksum(data).digest().hex()
        sha = hashlib.sha256(data).hexdigest() if checksum == "sha256" else None
        assert record.sha256 == sha
    listed = ce.list_exports(backend.base, filesystem=backend.new_fs())
    assert [e.files for e in listed] == [info.files]


def test_unknown_checksum_is_refused_before_anything_is_written(backend, source):
    with pytest.raises(ce.InvalidArgumentError, match="checksum must be one of"):
        ce.publish(source, backend.base, filesystem=backend.fs, checksum="md5")
    assert not backend.new_fs().exists(backend.strip(backend.base))


def test_a_version_1_marker_still_lists_and_verifies(backend, source):
    info = ce.publish(source, backend.base, filesystem=backend.fs)
    marker = backend.strip(info.uri) + "/" + MARKER_NAME
    doc = json.loads(backend.fs.cat_file(marker))
    files = _files(source)
    doc["format_version"] = 1
    doc["files"] = [
        {
            "path": f["path"],
            "size": f["size"],
            "sha256": hashlib.sha256(files[f["path"]]).hexdigest(),
        }
        for f in doc["files"]
    ]
    backend.fs.pipe_file(marker, json.dumps(doc).encode())
    fs = backend.new_fs()
    [old] = ce.list_exports(backend.base, filesystem=fs)
    assert old.version == info.version and all(f.crc32c is None for f in old.files)
    checked = ce.verify_export(backend.base, info.version, deep=True, filesystem=fs)
    assert set(checked.verified_by.values()) == {"read"}  # only bytes can prove a SHA-256
    _corrupt(backend, info)
    with pytest.raises(ce.CorruptExportError, match="checksum mismatch"):
        ce.verify_export(backend.base, info.version, deep=True, filesystem=backend.new_fs())


def test_a_version_1_entry_with_crc32c_is_rejected(backend, source):
    info = ce.publish(source, backend.base, filesystem=backend.fs)
    marker = backend.strip(info.uri) + "/" + MARKER_NAME
    doc = json.loads(backend.fs.cat_file(marker))
    doc["format_version"] = 1  # version 1 had sha256 only
    backend.fs.pipe_file(marker, json.dumps(doc).encode())
    with pytest.raises(ce.CorruptExportError, match="unexpected keys"):
        ce.verify_export(backend.base, info.version, filesystem=backend.new_fs())


def test_deep_verify_on_gcs_reads_no_object_bytes(gcs_backend, source):
    info = ce.publish(source, gcs_backend.base, filesystem=gcs_backend.fs)
    fs = FaultyFileSystem(gcs_backend.new_fs())
    good = ce.verify_export(gcs_backend.base, info.version, deep=True, filesystem=fs)
    assert set(good.verified_by.values()) == {"listing"}
    assert len(good.verified_by) == len(info.files)
    _corrupt(gcs_backend, info)
    fs.reset_counters()
    with pytest.raises(ce.CorruptExportError, match=r"variables\.index checksum mismatch"):
        ce.verify_export(gcs_backend.base, info.version, deep=True, filesystem=fs)
    assert fs.call_counts["find"] >= 1
    assert _byte_reads(fs) == []


def test_s3_keeps_the_declared_crc32c_and_deep_verify_uses_heads(s3_backend, source):
    """moto stores the checksum the client declares without checking it (real S3 checks), so
    what can be shown here is that our declaration arrives and HEAD returns it."""
    info = ce.publish(source, s3_backend.base, filesystem=s3_backend.fs)
    raw = s3_backend.new_fs()
    for record in info.files:
        bucket, key, _ = raw.split_path(s3_backend.strip(info.uri) + "/" + record.path)
        head = raw.call_s3("head_object", Bucket=bucket, Key=key, ChecksumMode="ENABLED")
        assert head["ChecksumCRC32C"] == base64.b64encode(bytes.fromhex(record.crc32c)).decode()
    fs = FaultyFileSystem(s3_backend.new_fs())
    good = ce.verify_export(s3_backend.base, info.version, deep=True, filesystem=fs)
    assert set(good.verified_by.values()) == {"head"}
    assert _byte_reads(fs) == []
    # Rewritten through the raw client: the object no longer carries our CRC32C, so that one
    # file (and only it) is read, and the mismatch is found.
    _corrupt(s3_backend, info)
    fs.reset_counters()
    with pytest.raises(ce.CorruptExportError, match=r"variables\.index checksum mismatch"):
        ce.verify_export(s3_backend.base, info.version, deep=True, filesystem=fs)
    read = {p for _, paths in _byte_reads(fs) for p in paths}
    assert read and all(p.endswith("variables/variables.index") for p in read)


def test_download_rereads_every_file(backend, source):
    info = ce.publish(source, backend.base, filesystem=backend.fs)
    fs = FaultyFileSystem(backend.new_fs())
    checked = ce.verify_export(backend.base, info.version, deep=True, download=True, filesystem=fs)
    assert checked.verified_by == {f.path: "read" for f in info.files}
    assert len(_byte_reads(fs)) >= len(info.files)
    _corrupt(backend, info)
    with pytest.raises(ce.CorruptExportError, match="checksum mismatch"):
        ce.verify_export(backend.base, info.version, deep=True, download=True, filesystem=fs)


def test_progress_hears_each_file_once_its_transfer_is_done(backend, source):
    seen: list[int] = []
    info = ce.publish(source, backend.base, filesystem=backend.fs, progress=seen.append)
    assert sorted(seen) == sorted(f.size for f in info.files)


def _bad_digest() -> OSError:
    return OSError(22, "400 BadDigest: the CRC32C you specified did not match the calculated one")


def test_a_rejected_upload_is_retried(server_backend, source):
    rule = FailOn(
        method="pipe_file",
        predicate=lambda m, p: p.endswith("variables.index"),
        error=_bad_digest,
        times=1,
    )
    fs = FaultyFileSystem(server_backend.new_fs(), fail_on=[rule])
    info = ce.publish(source, server_backend.base, filesystem=fs)
    assert rule.fired == 1
    ce.verify_export(
        server_backend.base, info.version, deep=True, filesystem=server_backend.new_fs()
    )


def test_an_upload_rejected_every_time_raises_and_commits_nothing(server_backend, source):
    rule = FailOn(
        method="pipe_file",
        predicate=lambda m, p: p.endswith("variables.index"),
        error=_bad_digest,
        times=None,
    )
    fs = FaultyFileSystem(server_backend.new_fs(), fail_on=[rule])
    with pytest.raises(ChecksumMismatchError, match=r"variables\.index.*rejected|rejected.*index"):
        ce.publish(source, server_backend.base, filesystem=fs)
    assert rule.fired == 3
    assert ce.list_exports(server_backend.base, filesystem=server_backend.new_fs()) == []


def test_cli_verify_download_rereads_and_finds_corruption(server_backend, source):
    from test_cli import cli, options

    info = ce.publish(source, server_backend.base, filesystem=server_backend.fs)
    opts = options(server_backend)
    ok = cli("verify", server_backend.base, str(info.version), "--deep", "--download", *opts)
    assert ok.returncode == 0, ok.stderr
    _corrupt(server_backend, info)
    bad = cli("verify", server_backend.base, str(info.version), "--deep", "--download", *opts)
    assert bad.returncode != 0 and "checksum mismatch" in bad.stderr


def test_crc32c_combine_equals_the_crc32c_of_the_concatenation():
    rng = random.Random(14)
    for n1, n2 in [(0, 0), (0, 5), (5, 0), (1, 1), (3, 4096), (1 << 20, 17), (12345, 1 << 16)]:
        a, b = rng.randbytes(n1), rng.randbytes(n2)
        whole = google_crc32c.value(a + b)
        assert crc32c_combine(google_crc32c.value(a), google_crc32c.value(b), n2) == whole


def test_a_large_local_file_is_copied_in_ranges_with_the_whole_files_crc32c(
    tmp_path, source, monkeypatch
):
    monkeypatch.setattr(source_module, "SPLIT_BYTES", 1 << 16)  # the 1 MiB shard splits
    ranges: list[int] = []
    real_copy_range = source_module._copy_range

    def counted(fds, start, end):
        ranges.append(start)
        return real_copy_range(fds, start, end)

    monkeypatch.setattr(source_module, "_copy_range", counted)
    base = tmp_path / "exports"
    info = ce.publish(source, str(base))
    assert len(ranges) == source_module.RANGES  # the shard, in ranges; small files whole
    expected = _files(source)
    for record in info.files:
        assert record.crc32c == google_crc32c.Checksum(expected[record.path]).digest().hex()
    copied = _files(base / str(info.version))
    assert copied.pop(MARKER_NAME) and copied == expected  # every byte landed as it was
    ce.verify_export(str(base), info.version, deep=True)


@pytest.mark.parametrize("delta", [-1, 1, -(1 << 19)])
def test_a_ranged_copy_refuses_a_file_whose_size_changed(tmp_path, monkeypatch, delta):
    monkeypatch.setattr(source_module, "SPLIT_BYTES", 1 << 16)
    src = tmp_path / "big.bin"
    src.write_bytes(random.Random(1).randbytes((1 << 20) + 3))
    scanned = source_module.SourceFile("big.bin", str(src), src.stat().st_size - delta)
    with pytest.raises(ce.InvalidSourceError, match=r"big\.bin changed while"):
        source_module.copy_file(scanned, str(tmp_path / "copy.bin"))
