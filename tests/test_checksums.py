"""CRC32C end to end: recorded per file, declared on upload, verified from the store's checksums."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import random
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path

import google_crc32c
import pytest
import servers
from savedmodels import fake_saved_model

import cloud_exporter as ce
from cloud_exporter import source as source_module
from cloud_exporter.errors import ChecksumMismatchError
from cloud_exporter.layout import MARKER_NAME
from cloud_exporter.source import crc32c_b64, crc32c_combine
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


SHARD = "variables/variables.data-00000-of-00001"
MULTIPART_CALLS = {"create_multipart_upload", "upload_part", "complete_multipart_upload"}
RESUMABLE_CALLS = {"initiate_upload", "upload_chunk"}


@pytest.fixture
def multipart_above_8_mib(monkeypatch):
    """The multipart and resumable tests below use 9-17 MiB files, which go in one request by
    default (up to SINGLE_REQUEST_MAX): the limit is lowered to the part size for them."""
    from cloud_exporter import storage_checksums

    monkeypatch.setattr(storage_checksums, "SINGLE_REQUEST_MAX", storage_checksums.TRANSFER_CHUNK)


@pytest.mark.parametrize("backend_name", ["s3", "gcs"])
@pytest.mark.parametrize(
    ("shard_bytes", "single"),
    [((17 << 20) + 5, True), ((33 << 20) + 1, False)],
    ids=["17MiB", "33MiB"],
)
def test_files_up_to_32_mib_go_in_one_request_with_their_crc32c(
    request, tmp_path, backend_name, shard_bytes, single
):
    backend = servers.server_backend_for(request, backend_name)
    src = fake_saved_model(tmp_path / "model", seed=13, shard_bytes=shard_bytes)
    fs = FaultyFileSystem(backend.new_fs())
    info = ce.publish(src, backend.base + " [x]*?#%", filesystem=fs)
    split = {c.method for c in fs.calls} & (MULTIPART_CALLS | RESUMABLE_CALLS)
    wanted = MULTIPART_CALLS if backend_name == "s3" else RESUMABLE_CALLS
    assert split == (set() if single else wanted)
    [shard] = [f for f in info.files if f.path == SHARD]
    remote = backend.strip(info.uri) + "/" + SHARD
    assert backend.fs.cat_file(remote) == (src / SHARD).read_bytes()
    if backend_name == "s3" and single:  # the declared CRC32C, kept by the store
        head = _head(backend.fs, remote)
        assert head["ChecksumCRC32C"] == base64.b64encode(bytes.fromhex(shard.crc32c)).decode()
    if backend_name == "gcs":
        assert backend.fs.info(remote)["crc32c"] == crc32c_b64(shard.crc32c)


# A stand-in for the `crc32c` package that moto looks for (real S3 computes real CRC32C; moto
# without that package computes CRC32 under the CRC32C name).
CRC32C_SHIM = """import google_crc32c


def crc32c(data, value=0):
    return google_crc32c.extend(value, bytes(data))
"""


@pytest.fixture(scope="module")
def crc32c_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict]]:
    """(bucket URI, storage options) of a moto server that computes real CRC32C."""
    shim = tmp_path_factory.mktemp("crc32c-shim")
    (shim / "crc32c.py").write_text(CRC32C_SHIM)
    with contextlib.ExitStack() as stack:
        with pytest.MonkeyPatch.context() as mp:  # only this server's process sees the shim
            mp.setenv("PYTHONPATH", os.pathsep.join([str(shim), os.environ.get("PYTHONPATH", "")]))
            url = stack.enter_context(servers.moto_server())
        options = servers.s3_storage_options(url)
        servers.create_bucket("s3", options, "crc32c-bucket")
        yield "s3://crc32c-bucket", options


def _head(fs, path: str) -> dict:
    bucket, key, _ = fs.split_path(path)
    return fs.call_s3("head_object", Bucket=bucket, Key=key, ChecksumMode="ENABLED")


@pytest.mark.usefixtures("multipart_above_8_mib")
@pytest.mark.parametrize("mode", ["staged", "direct"])
def test_a_multipart_s3_upload_carries_a_full_object_crc32c(crc32c_s3, tmp_path, monkeypatch, mode):
    import s3fs.core

    # s3fs copies objects above this threshold (150 MiB by default) part by part, and such a
    # copy would drop the checksum: lowered here so that the 17 MiB shard would cross it.
    monkeypatch.setattr(s3fs.core, "MANAGED_COPY_THRESHOLD", 8 << 20)
    bucket, options = crc32c_s3
    base = f"{bucket}/t-{uuid.uuid4().hex[:8]} [1]*"
    src = fake_saved_model(tmp_path / "model", seed=5, shard_bytes=(17 << 20) + 5)  # 3 parts
    info = ce.publish(src, base, storage_options=options, mode=mode)
    raw = servers.Backend("s3", "s3", base, bucket, options).fs
    [shard] = [f for f in info.files if f.path == SHARD]
    head = _head(raw, raw._strip_protocol(info.uri) + "/" + SHARD)
    assert head["ChecksumType"] == "FULL_OBJECT"
    assert head["ChecksumCRC32C"] == base64.b64encode(bytes.fromhex(shard.crc32c)).decode()
    fs = FaultyFileSystem(raw)
    good = ce.verify_export(base, info.version, deep=True, filesystem=fs)
    assert good.verified_by == {f.path: "head" for f in info.files}
    assert _byte_reads(fs) == []
    assert raw.call_s3("list_multipart_uploads", Bucket="crc32c-bucket").get("Uploads") is None
    path = raw._strip_protocol(info.uri) + "/" + SHARD
    raw.pipe_file(path, bytes(reversed((src / SHARD).read_bytes())))  # same size, other bytes
    with pytest.raises(ce.CorruptExportError, match=r"variables\.data.* checksum mismatch"):
        ce.verify_export(base, info.version, deep=True, storage_options=options)


@pytest.mark.usefixtures("multipart_above_8_mib")
def test_moto_without_crc32c_records_crc32_and_deep_verify_reads_that_file(s3_backend, tmp_path):
    """The session's moto has no crc32c package: for a multipart upload it stores a CRC32 under
    the CRC32C name. Deep verify must not call that corruption: it reads the file instead."""
    src = fake_saved_model(tmp_path / "model", seed=6, shard_bytes=(9 << 20) + 1)
    info = ce.publish(src, s3_backend.base, filesystem=s3_backend.fs)
    data = (src / SHARD).read_bytes()
    head = _head(s3_backend.fs, s3_backend.strip(info.uri) + "/" + SHARD)
    assert head["ChecksumCRC32C"] == base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()
    fs = FaultyFileSystem(s3_backend.new_fs())
    good = ce.verify_export(s3_backend.base, info.version, deep=True, filesystem=fs)
    assert good.verified_by == {f.path: "read" if f.path == SHARD else "head" for f in info.files}
    assert {p for _, paths in _byte_reads(fs) for p in paths} == {
        s3_backend.strip(info.uri) + "/" + SHARD
    }


def _opens_of(monkeypatch, target: Path) -> list[int]:
    """Bytes read through each open() of ``target`` in this process (one entry per open)."""
    import builtins

    real_open, reads = builtins.open, []

    class Counted:
        def __init__(self, f):
            self._f, self._slot = f, len(reads)
            reads.append(0)

        def read(self, *args):
            data = self._f.read(*args)
            reads[self._slot] += len(data)
            return data

        def __getattr__(self, name):
            return getattr(self._f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self._f.close()

    def counting_open(file, mode="r", *args, **kwargs):
        f = real_open(file, mode, *args, **kwargs)
        same = isinstance(file, (str, os.PathLike)) and os.path.abspath(file) == str(target)
        return Counted(f) if same and "r" in mode else f

    monkeypatch.setattr(builtins, "open", counting_open)
    return reads


@pytest.mark.usefixtures("multipart_above_8_mib")
@pytest.mark.parametrize("mode", ["staged", "direct"])
def test_a_large_gcs_upload_reads_the_file_once_and_declares_its_crc32c(
    gcs_backend, tmp_path, monkeypatch, mode
):
    from cloud_exporter import storage_checksums

    monkeypatch.setattr(storage_checksums, "GCS_CHUNK", 1 << 20)
    sent: list[dict] = []
    real_send = storage_checksums._gcs_send

    def recording(fs, location, chunk, where):
        sent.append({"bytes": len(chunk), "declared": where[3]})
        return real_send(fs, location, chunk, where)

    monkeypatch.setattr(storage_checksums, "_gcs_send", recording)
    src = fake_saved_model(tmp_path / "model", seed=7, shard_bytes=(9 << 20) + 1)
    reads = _opens_of(monkeypatch, (src / SHARD).resolve())
    fs = FaultyFileSystem(gcs_backend.new_fs())
    info = ce.publish(src, gcs_backend.base + " [x]*?#%", filesystem=fs, mode=mode)
    monkeypatch.undo()
    [shard] = [f for f in info.files if f.path == SHARD]
    assert reads == [shard.size]  # one open, every byte read once
    assert [s["bytes"] for s in sent] == [1 << 20] * 9 + [1]
    assert [s["declared"] for s in sent] == [None] * 9 + [crc32c_b64(shard.crc32c)]
    assert [c.method for c in fs.calls if c.method in ("initiate_upload", "upload_chunk")] == [
        "initiate_upload"
    ] + ["upload_chunk"] * 10
    assert (
        gcs_backend.fs.cat_file(gcs_backend.strip(info.uri) + "/" + SHARD)
        == (src / SHARD).read_bytes()
    )
    checked = ce.verify_export(
        gcs_backend.base + " [x]*?#%", info.version, deep=True, filesystem=gcs_backend.new_fs()
    )
    assert set(checked.verified_by.values()) == {"listing"}


def _corrupting_send(monkeypatch, times: int | None) -> list[int]:
    """Flip one byte of the first chunk of a resumable upload ``times`` times (None: always)."""
    from cloud_exporter import storage_checksums

    real_send, fired = storage_checksums._gcs_send, [0]

    def corrupting(fs, location, chunk, where):
        if where[0] == 0 and (times is None or fired[0] < times):
            fired[0] += 1
            chunk = bytes([chunk[0] ^ 1]) + chunk[1:]  # bytes damaged on the way to the store
        return real_send(fs, location, chunk, where)

    monkeypatch.setattr(storage_checksums, "_gcs_send", corrupting)
    return fired


@pytest.mark.usefixtures("multipart_above_8_mib")
def test_a_gcs_chunk_damaged_in_flight_is_caught_and_sent_again(gcs_backend, tmp_path, monkeypatch):
    """fake-gcs-server ignores X-Goog-Hash (real GCS answers 400): the crc32c the store
    computed, in the final chunk's answer, still exposes the damage."""
    src = fake_saved_model(tmp_path / "model", seed=8, shard_bytes=(9 << 20) + 3)
    fired = _corrupting_send(monkeypatch, times=1)
    info = ce.publish(src, gcs_backend.base, filesystem=gcs_backend.new_fs())
    assert fired == [1]
    stored = gcs_backend.fs.cat_file(gcs_backend.strip(info.uri) + "/" + SHARD)
    assert stored == (src / SHARD).read_bytes()
    ce.verify_export(
        gcs_backend.base, info.version, deep=True, download=True, filesystem=gcs_backend.new_fs()
    )


@pytest.mark.usefixtures("multipart_above_8_mib")
def test_a_gcs_upload_damaged_every_time_commits_nothing(gcs_backend, tmp_path, monkeypatch):
    src = fake_saved_model(tmp_path / "model", seed=9, shard_bytes=(9 << 20) + 3)
    fired = _corrupting_send(monkeypatch, times=None)
    with pytest.raises(ChecksumMismatchError, match=r"variables\.data.*CRC32C"):
        ce.publish(src, gcs_backend.base, filesystem=gcs_backend.new_fs())
    assert fired == [3]
    fresh = gcs_backend.new_fs()
    assert ce.list_exports(gcs_backend.base, filesystem=fresh) == []
    left = [p for p in fresh.find(gcs_backend.strip(gcs_backend.base)) if p.endswith(SHARD)]
    assert left == []  # the damaged object is deleted, not left in staging


@pytest.mark.usefixtures("multipart_above_8_mib")
@pytest.mark.parametrize(
    ("backend_name", "method", "nth"),
    [
        ("s3", "upload_part", 1),
        ("s3", "complete_multipart_upload", 1),
        ("gcs", "initiate_upload", 1),
        ("gcs", "upload_chunk", 1),
        ("gcs", "upload_chunk", 5),  # the final chunk: a lost answer meets a closed session
    ],
)
@pytest.mark.parametrize("after_mutation", [False, True])
def test_a_large_upload_survives_a_transient_error_in_any_of_its_requests(
    request, tmp_path, monkeypatch, backend_name, method, nth, after_mutation
):
    from cloud_exporter import storage_checksums

    monkeypatch.setattr(storage_checksums, "GCS_CHUNK", 4 << 20)  # 5 chunks
    backend = servers.server_backend_for(request, backend_name)
    src = fake_saved_model(tmp_path / "model", seed=10, shard_bytes=(17 << 20) + 5)
    rule = FailOn(method=method, nth=nth, after_mutation=after_mutation)
    fs = FaultyFileSystem(backend.new_fs(), fail_on=[rule])
    info = ce.publish(src, backend.base, filesystem=fs)
    assert rule.fired == 1
    stored = backend.fs.cat_file(backend.strip(info.uri) + "/" + SHARD)
    assert stored == (src / SHARD).read_bytes()
    ce.verify_export(backend.base, info.version, deep=True, filesystem=backend.new_fs())


@pytest.mark.usefixtures("multipart_above_8_mib")
@pytest.mark.parametrize("backend_name", ["s3", "gcs"])
def test_a_crash_inside_a_large_upload_publishes_nothing(
    request, tmp_path, monkeypatch, backend_name
):
    from cloud_exporter import storage_checksums
    from cloud_exporter.testing import InjectedCrash

    monkeypatch.setattr(storage_checksums, "GCS_CHUNK", 4 << 20)
    backend = servers.server_backend_for(request, backend_name)
    src = fake_saved_model(tmp_path / "model", seed=11, shard_bytes=(17 << 20) + 5)
    part = "upload_part" if backend_name == "s3" else "upload_chunk"
    rule = FailOn(method=part, nth=2, error=InjectedCrash("killed mid-upload"))
    fs = FaultyFileSystem(backend.new_fs(), fail_on=[rule])
    with pytest.raises(InjectedCrash):
        ce.publish(src, backend.base, filesystem=fs)
    assert ce.list_exports(backend.base, filesystem=backend.new_fs()) == []
    aborts = [c for c in fs.calls if c.method == "abort_upload"]
    assert len(aborts) == 1 and aborts[0].applied  # a failure (not a dead process) cleans up


@pytest.mark.usefixtures("multipart_above_8_mib")
@pytest.mark.parametrize("change", ["grow", "shrink"])
@pytest.mark.parametrize("backend_name", ["s3", "gcs"])
def test_a_large_upload_refuses_a_file_that_changes_size_mid_upload(
    request, tmp_path, monkeypatch, backend_name, change
):
    from cloud_exporter import storage_checksums

    monkeypatch.setattr(storage_checksums, "GCS_CHUNK", 1 << 20)
    backend = servers.server_backend_for(request, backend_name)
    # S3: 6 parts, more than PARTS_IN_FLIGHT, so the reader is still reading when the first
    # part goes out; GCS: 1 MiB chunks, read one at a time.
    shard_bytes = (17 << 20) + 1 if backend_name == "gcs" else (41 << 20) + 1
    src = fake_saved_model(tmp_path / "model", seed=12, shard_bytes=shard_bytes)
    shard = src / SHARD
    first = "upload_chunk" if backend_name == "gcs" else "upload_part"

    def write_to_the_file(method, path):
        if method == first:  # the first chunk or part is read: something writes to the file
            if change == "grow":
                with open(shard, "ab") as f:
                    f.write(b"more")
            else:
                os.truncate(shard, 3 << 20)
        return False

    rule = FailOn(predicate=write_to_the_file)
    fs = FaultyFileSystem(backend.new_fs(), fail_on=[rule])
    with pytest.raises(ce.InvalidSourceError, match=r"variables\.data.*changed size"):
        ce.publish(src, backend.base, filesystem=fs)
    fresh = backend.new_fs()
    assert ce.list_exports(backend.base, filesystem=fresh) == []
    assert [p for p in fresh.find(backend.strip(backend.base)) if p.endswith(SHARD)] == []
    if backend_name == "s3":  # the multipart upload was aborted, not completed
        bucket = backend.strip(backend.base).split("/", 1)[0]
        assert fresh.call_s3("list_multipart_uploads", Bucket=bucket).get("Uploads") is None


def test_a_staged_object_replaced_before_its_copy_commits_nothing(
    server_backend, source, monkeypatch
):
    """Our own staged object is overwritten (same size, other bytes, a valid CRC32C of its
    own) between its upload and its copy into place: the copy reports that CRC32C, the
    publish raises ChecksumMismatchError naming both paths, and nothing is committed."""
    from cloud_exporter import commit

    base = server_backend.join("swapped [1]*?#% ü")
    real = commit.StagedCopy.stage

    def overwrite_after_stage(self, plan):
        real(self, plan)
        path = f"{plan.staging}/{SHARD}"
        server_backend.new_fs().pipe_file(path, bytes(reversed((source / SHARD).read_bytes())))

    monkeypatch.setattr(commit.StagedCopy, "stage", overwrite_after_stage)
    with pytest.raises(ChecksumMismatchError, match=r"variables\.data.*holds CRC32C"):
        ce.publish(source, base, filesystem=server_backend.new_fs())
    monkeypatch.undo()
    assert ce.list_exports(base, filesystem=server_backend.new_fs()) == []
    left = server_backend.new_fs().find(server_backend.strip(base))
    assert left == []  # the abort removed what the copies placed, the staging and the claim


@pytest.mark.parametrize("flat", [False, True])
def test_a_promotion_of_a_tampered_export_commits_nothing(server_backend, source, flat):
    """The export's shard was replaced by other bytes of the same size after its commit: each
    copy of a promotion reports its CRC32C, which must be the manifest's, so the promotion
    raises ChecksumMismatchError and the serving location gets no marker."""
    from cloud_exporter.jobs import promote

    base, serving = server_backend.join("tampered [1] ü"), server_backend.join("serving #%")
    info = ce.publish(source, base, filesystem=server_backend.new_fs())
    raw = server_backend.new_fs()
    raw.pipe_file(
        server_backend.strip(info.uri) + "/" + SHARD, bytes(reversed((source / SHARD).read_bytes()))
    )
    with pytest.raises(ChecksumMismatchError, match=r"variables\.data"):
        promote(base, serving, flat=flat, filesystem=server_backend.new_fs())
    left = {
        p.rsplit("/", 1)[-1] for p in server_backend.new_fs().find(server_backend.strip(serving))
    }
    assert MARKER_NAME not in left
