"""Resume against hostile leftovers: planted or broken upload records, odd names, skewed clocks."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import pytest
from invariants import manifest_of, manifest_of_export
from savedmodels import fake_saved_model
from servers import Backend
from test_resume import _die_before_copies, _uploads

import cloud_exporter as ce
from cloud_exporter.layout import STAGING_DIRNAME
from cloud_exporter.marker import FileRecord
from cloud_exporter.resume import RECORDS_DIRNAME, encode_record, parse_record
from cloud_exporter.testing import FaultyFileSystem

CRC = "0123abcd"
SHARD = "variables/variables.data-00000-of-00001"


def _crc(data: bytes) -> bytes:
    """The CRC32C of ``data`` as the 4 big-endian bytes a store keeps."""
    import google_crc32c

    return google_crc32c.value(data).to_bytes(4, "big")


def _name(path: str) -> str:
    return hashlib.sha256(path.encode()).hexdigest() + ".json"


def _doc(path: object = "variables/x", **over: object) -> bytes:
    doc = {"format": 1, "path": path, "size": 5, "crc32c": CRC, "sha256": None, **over}
    return json.dumps(doc).encode()


def test_a_well_formed_record_parses_and_round_trips() -> None:
    for path in ("variables/x", "assets/vocab [a]*?#%ü.txt"):
        record = FileRecord(path, 5, None, CRC)
        assert parse_record(encode_record(record), _name(path)) == record


@pytest.mark.parametrize(
    "data,name",
    [
        (b"", _name("variables/x")),
        (_doc()[:-7], _name("variables/x")),  # truncated
        (b"\xff\xfe" + _doc(), _name("variables/x")),  # not UTF-8
        (b"[" * 100_000 + b"]" * 100_000, _name("variables/x")),  # nested past any parser
        (_doc(pad="x" * (1 << 17)), _name("variables/x")),  # larger than a record can be
        (
            b'{"format": 1, "path": "a", "size": NaN, "crc32c": "0123abcd", "sha256": null}',
            _name("a"),
        ),
        (_doc(), _name("variables/y")),  # stored under another file's name
        (_doc("../../outside"), _name("../../outside")),  # climbs out of the staging dir
        (_doc("/etc/passwd"), _name("/etc/passwd")),  # absolute
        (_doc("variables//x"), _name("variables//x")),
        (_doc("variables/./x"), _name("variables/./x")),
        (_doc("a\\b"), _name("a\\b")),
        (_doc(["variables/x"]), _name("variables/x")),
        (_doc(size=-1), _name("variables/x")),
        (_doc(size=2**63), _name("variables/x")),  # beyond int64
        (_doc(size=True), _name("variables/x")),
        (_doc(size=5.0), _name("variables/x")),
        (_doc(crc32c="zzzzzzzz"), _name("variables/x")),
        (_doc(crc32c="0123abc"), _name("variables/x")),
        (_doc(sha256="f" * 63), _name("variables/x")),
        (_doc(format=2), _name("variables/x")),
        (json.dumps([1, 2]).encode(), _name("variables/x")),
    ],
)
def test_hostile_records_are_refused(data: bytes, name: str) -> None:
    assert parse_record(data, name) is None


def _source(tmp_path: Path) -> Path:
    root = fake_saved_model(tmp_path / "src", seed=3, shard_bytes=64 << 10)
    (root / "assets" / "vocab [a]*?#%ü.txt").write_text("odd names")
    return root


def test_planted_records_outside_their_place_are_never_used(
    server_backend: Backend, tmp_path: Path
) -> None:
    """Records that climb out of the staging dir, sit deeper than a staging dir, or stand
    beside an object of another size are ignored: those files are uploaded."""
    source = _source(tmp_path)
    base = server_backend.base
    fs = server_backend.new_fs()
    root = server_backend.strip(base) + "/" + STAGING_DIRNAME
    shard = SHARD
    data = (source / shard).read_bytes()
    good = ce.publish(source, server_backend.join("reference"), filesystem=fs)
    record = next(r for r in good.files if r.path == shard)
    outside = server_backend.strip(base) + "/outside/" + shard
    fs.pipe_file(outside, data)
    # (1) a record whose path climbs to that object (its name is the sha256 of that path)
    climbing = "../outside/" + shard
    forged = FileRecord(climbing, record.size, None, record.crc32c)
    fs.pipe_file(f"{root}/1-wA/{RECORDS_DIRNAME}/{_name(climbing)}", encode_record(forged))
    # (2) a valid record one level deeper than a staging directory
    deep = FileRecord(shard, record.size, None, record.crc32c)
    fs.pipe_file(f"{root}/1-wB/sub/{shard}", data)
    fs.pipe_file(f"{root}/1-wB/sub/{RECORDS_DIRNAME}/{_name(shard)}", encode_record(deep))
    # (3) a valid record beside an object of another size
    fs.pipe_file(f"{root}/1-wC/{shard}", data + b"!")
    fs.pipe_file(f"{root}/1-wC/{RECORDS_DIRNAME}/{_name(shard)}", encode_record(deep))
    # (4) broken records beside the right object: truncated, nested, not JSON
    for owner, junk in (("1-wD", encode_record(deep)[:-3]), ("1-wE", b"[" * 5000), ("1-wF", b"\0")):
        fs.pipe_file(f"{root}/{owner}/{shard}", data)
        fs.pipe_file(f"{root}/{owner}/{RECORDS_DIRNAME}/{_name(shard)}", junk)
    if server_backend.name == "gcs":  # (5) a record the object's stored CRC32C contradicts
        fs.pipe_file(f"{root}/1-wG/{shard}", bytes(reversed(data)))
        fs.pipe_file(f"{root}/1-wG/{RECORDS_DIRNAME}/{_name(shard)}", encode_record(deep))
    resumer = FaultyFileSystem(server_backend.new_fs())
    info = ce.publish(source, base, filesystem=resumer)
    assert _uploads(resumer) == len(info.files)  # nothing was proven
    copied_from = [c.paths[0] for c in resumer.calls if c.method == "cp_file"]
    assert all(f"/{STAGING_DIRNAME}/" + str(info.version) in p for p in copied_from), copied_from
    ce.verify_export(base, info.version, deep=True, filesystem=server_backend.new_fs())


def test_resume_with_odd_names_and_a_clock_hours_off(
    server_backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Glob characters and unicode in the base and the files; the resumer's clock is 9 hours
    ahead of the dead publisher's: proof does not depend on time, every file is reused."""
    source = _source(tmp_path)
    base = server_backend.scratch.rstrip("/") + "/exp[1] *?#% ü/models"
    _die_before_copies(server_backend, source, base)
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 9 * 3600)
    resumer = FaultyFileSystem(server_backend.new_fs())
    info = ce.publish(source, base, filesystem=resumer)
    monkeypatch.undo()
    assert _uploads(resumer) == 0
    # (invariants.check_state expands glob characters in its own reads: compared directly here)
    listed = ce.list_exports(base, filesystem=server_backend.new_fs())
    assert [e.version for e in listed] == [info.version]
    assert manifest_of_export(info) == manifest_of(source)
    ce.verify_export(base, info.version, deep=True, filesystem=server_backend.new_fs())


def _scene(backend: Backend, tmp_path: Path, name: str):
    """(source, base, a filesystem, the base's staging root, the shard's bytes, other bytes of
    the same size) for planting leftovers."""
    source = _source(tmp_path)
    base = backend.join(name)
    data = (source / SHARD).read_bytes()
    root = backend.strip(base) + "/" + STAGING_DIRNAME
    return source, base, backend.new_fs(), root, data, bytes(reversed(data))


def _plant(backend: Backend, fs, path: str, data: bytes, crc32c: bytes | None) -> None:
    """Write an object into a staging area; on S3 with ``crc32c`` declared (moto keeps a
    declared checksum unchecked, so any value can be planted), without one if None. GCS
    computes the object's CRC32C itself."""
    if backend.name != "s3":
        fs.pipe_file(path, data)
        return
    import base64

    bucket, key = path.split("/", 1)
    extra = {}
    if crc32c is not None:
        extra = {"ChecksumAlgorithm": "CRC32C", "ChecksumCRC32C": base64.b64encode(crc32c).decode()}
    fs.call_s3("put_object", Bucket=bucket, Key=key, Body=data, **extra)


def test_staged_objects_without_records_are_proven_only_by_a_matching_stored_crc32c(
    server_backend: Backend, tmp_path: Path
) -> None:
    """No record: an object of the right size is reused only if the CRC32C the store keeps
    for it equals the local file's. Other bytes of the same size, or no stored CRC32C (S3),
    are uploaded instead; the one right object is copied (the control that this can pass)."""

    source, base, fs, root, data, other = _scene(server_backend, tmp_path, "bare [1]*?# ü")
    shard = SHARD
    assert other != data

    _plant(server_backend, fs, f"{root}/1-wA/{shard}", other, _crc(other))  # other bytes
    if server_backend.name == "s3":
        _plant(server_backend, fs, f"{root}/1-wB/{shard}", data, None)  # no CRC32C kept
    _plant(server_backend, fs, f"{root}/1-wC/{shard}", data, _crc(data))  # the right object
    resumer = FaultyFileSystem(server_backend.new_fs())
    info = ce.publish(source, base, filesystem=resumer)
    assert _uploads(resumer) == len(info.files) - 1
    copied_from = [c.paths[0] for c in resumer.calls if c.method == "cp_file"]
    assert [p for p in copied_from if "/1-w" in p] == [f"{root}/1-wC/{shard}"]
    ce.verify_export(base, info.version, deep=True, filesystem=server_backend.new_fs())
    assert manifest_of_export(info) == manifest_of(source)


def test_a_staged_object_gone_before_its_proof_is_uploaded_instead(
    server_backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A listed object that vanishes before its checksum is read (S3: the HEAD finds nothing)
    or before its copy (GCS: the listing carried its CRC32C) is uploaded, not an error: its
    live owner finished and cleaned up meanwhile."""

    from cloud_exporter import resume

    source, base, fs, root, data, _ = _scene(server_backend, tmp_path, "gone [1] ü")
    planted = f"{root}/1-wC/{SHARD}"
    _plant(server_backend, fs, planted, data, _crc(data))
    real = resume.Leftovers.candidates

    def vanish_first(self, storage):
        server_backend.new_fs().rm_file(planted)
        return real(self, storage)

    monkeypatch.setattr(resume.Leftovers, "candidates", vanish_first)
    resumer = FaultyFileSystem(server_backend.new_fs())
    info = ce.publish(source, base, filesystem=resumer)
    assert _uploads(resumer) == len(info.files)
    ce.verify_export(base, info.version, deep=True, filesystem=server_backend.new_fs())


def test_a_staged_object_replaced_after_its_proof_is_uploaded_instead(
    server_backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The window between a proof and the copy that relies on it: the proven object is
    replaced by other bytes of the same size (with their own valid CRC32C) after the resume
    proved it. The copy reports the new object's CRC32C, so the file is uploaded instead and
    the export holds the local bytes (the old code committed the planted ones)."""

    from cloud_exporter import resume

    source, base, fs, root, data, other = _scene(server_backend, tmp_path, "swap [1]*?#% ü")
    shard = SHARD
    planted = f"{root}/1-wC/{shard}"
    _plant(server_backend, fs, planted, data, _crc(data))
    real = resume.Session.reuse

    def swap_after_proof(self, plan):
        left = real(self, plan)
        assert shard in self.sources  # proven: the right object was there
        _plant(server_backend, server_backend.new_fs(), planted, other, _crc(other))
        return left

    monkeypatch.setattr(resume.Session, "reuse", swap_after_proof)
    resumer = FaultyFileSystem(server_backend.new_fs())
    info = ce.publish(source, base, filesystem=resumer)
    assert _uploads(resumer) == len(info.files)  # the swapped file too
    ce.verify_export(base, info.version, deep=True, filesystem=server_backend.new_fs())
    assert manifest_of_export(info) == manifest_of(source)
    landed = server_backend.new_fs().cat_file(server_backend.strip(info.uri) + "/" + shard)
    assert landed == data


def test_only_the_newest_staged_objects_per_file_are_asked_about_on_s3(
    s3_backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A staging area full of dead attempts costs at most BARE_PER_FILE HEADs per file: the
    newest objects are asked. The right object behind newer wrong ones is not reused (the
    file is uploaded); once it is among the newest, it is."""

    from cloud_exporter import resume

    source, base, fs, root, data, other = _scene(s3_backend, tmp_path, "many dead [1]*?#% ü")
    shard = SHARD

    asked: list[list[str]] = []
    real = resume.Leftovers.candidates

    def spy(self, storage):
        asked.append(list(self.bare))
        return real(self, storage)

    monkeypatch.setattr(resume.Leftovers, "candidates", spy)
    _plant(s3_backend, fs, f"{root}/1-wA/{shard}", data, _crc(data))  # the oldest
    time.sleep(1.1)  # listed times have one-second steps
    for owner in ("1-wB", "1-wC", "1-wD", "1-wE", "1-wF"):
        _plant(s3_backend, fs, f"{root}/{owner}/{shard}", other, _crc(other))
    resumer = FaultyFileSystem(s3_backend.new_fs())
    info = ce.publish(source, base, filesystem=resumer)
    assert _uploads(resumer) == len(info.files)
    assert len(asked[-1]) == resume.BARE_PER_FILE
    assert f"1-wA/{shard}" not in asked[-1]
    time.sleep(1.1)
    _plant(s3_backend, fs, f"{root}/1-wG/{shard}", data, _crc(data))  # now the newest
    resumer = FaultyFileSystem(s3_backend.new_fs())
    info = ce.publish(source, base, filesystem=resumer)
    assert _uploads(resumer) == len(info.files) - 1
    assert len(asked[-1]) == resume.BARE_PER_FILE and f"1-wG/{shard}" in asked[-1]
    ce.verify_export(base, info.version, deep=True, filesystem=s3_backend.new_fs())
    assert manifest_of_export(info) == manifest_of(source)
