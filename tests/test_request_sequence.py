"""The requests a publish sends to the S3 server, as s3fs sends them (docs/protocol.md,
"Requests per publish, in order"): what the protocol needs and nothing to look up sizes."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from savedmodels import fake_saved_model

import cloud_exporter as ce
from cloud_exporter import storage_checksums
from cloud_exporter.layout import MARKER_NAME
from cloud_exporter.resume import RECORDS_DIRNAME

ODD_BASE = " [v]*?#% ü"  # glob characters, a space and unicode in the base


def _record_requests(fs) -> list[tuple[str, str]]:
    """(S3 operation, key) of every request the s3fs instance ``fs`` sends from now on."""
    sent: list[tuple[str, str]] = []
    lock = threading.Lock()
    real = fs._call_s3

    async def recording(method, *args, **kwargs):
        with lock:
            sent.append((method, kwargs.get("Key") or kwargs.get("Prefix") or ""))
        return await real(method, *args, **kwargs)

    real_sync = fs.call_s3  # bound to the original coroutine when fs was made

    def recording_sync(method, *args, **kwargs):
        with lock:
            sent.append((method, kwargs.get("Key") or kwargs.get("Prefix") or ""))
        return real_sync(method, *args, **kwargs)

    fs._call_s3, fs.call_s3 = recording, recording_sync
    return sent


@pytest.mark.parametrize(
    ("resume", "checksum"), [(True, "crc32c"), (False, "crc32c"), (True, "sha256")]
)
def test_a_staged_s3_publish_copies_without_looking_up_sizes(
    s3_backend, tmp_path, resume, checksum, monkeypatch
):
    """Upload records only where the store's own CRC32C cannot prove the object: with SHA-256
    recorded. A crc32c publish writes none (S3 keeps each upload's checked CRC32C)."""

    bucket = "s3://" + s3_backend.strip(s3_backend.base).split("/", 1)[0]
    monkeypatch.setitem(storage_checksums.S3_KEEPS_CRC32C, bucket, True)  # asked once per process
    source = fake_saved_model(tmp_path / "model", seed=21)
    files = sorted(p.relative_to(source).as_posix() for p in source.rglob("*") if p.is_file())
    fs = s3_backend.new_fs()
    sent = _record_requests(fs)
    info = ce.publish(
        source, s3_backend.base + ODD_BASE, filesystem=fs, resume=resume, checksum=checksum
    )
    ops = [op for op, _ in sent]
    assert "head_object" not in ops  # no size look-up before a copy, no HEAD after a listing
    assert ops.count("copy_object") == len(files)
    # Listings: staging (resume only), the base's children, pre- and post-commit checks.
    assert ops.count("list_objects_v2") == (4 if resume else 3)
    records = [k for op, k in sent if op == "put_object" and f"/{RECORDS_DIRNAME}/" in k]
    assert len(records) == (len(files) if resume and checksum == "sha256" else 0)
    marker = next(
        i for i, (op, k) in enumerate(sent) if op == "put_object" and k.endswith(MARKER_NAME)
    )
    record_puts = [i for i, (op, k) in enumerate(sent) if op == "put_object" and k in records]
    assert all(i < marker for i in record_puts)  # every record lands before the commit
    checked = ce.verify_export(
        s3_backend.base + ODD_BASE, info.version, filesystem=s3_backend.new_fs()
    )
    assert sorted(f.path for f in checked.files) == files
    left = s3_backend.new_fs().find(
        s3_backend.strip(s3_backend.base + ODD_BASE) + "/.cloud-exporter-staging"
    )
    assert left == []  # records and staged objects removed with the claim


def test_a_copy_whose_staged_source_is_gone_raises_a_typed_error(s3_backend, tmp_path: Path):
    """The known-size copy (one CopyObject) still reports a missing source as missing."""
    from cloud_exporter.storage import Storage

    storage = Storage(s3_backend.new_fs())
    src = s3_backend.strip(s3_backend.base) + "/gone [1]"
    with pytest.raises(ce.LocationNotFoundError, match=r"gone \[1\]"):
        storage.copy([(src, src + "-copy")], {src: 10})


@pytest.mark.parametrize("mode", ["staged", "direct"])
def test_saved_model_pb_is_the_last_data_write_and_both_checks_still_list(
    s3_backend, tmp_path, mode
):
    """saved_model.pb is written beside the pre-commit LIST, after every other file is in
    the version directory; the version directory is still listed before and after the marker."""
    source = fake_saved_model(tmp_path / "model", seed=22)
    fs = s3_backend.new_fs()
    sent = _record_requests(fs)
    info = ce.publish(source, s3_backend.base + ODD_BASE, filesystem=fs, mode=mode)
    target = f"{info.version!s}/"
    write = "copy_object" if mode == "staged" else "put_object"
    placed = [(i, k) for i, (op, k) in enumerate(sent) if op == write and f"/{target}" in k]
    pb = next(i for i, k in placed if k.endswith("/saved_model.pb"))
    assert all(i < pb for i, k in placed if not k.endswith(("/saved_model.pb", MARKER_NAME)))
    marker = next(i for i, k in placed if k.endswith(MARKER_NAME)) if mode == "direct" else None
    if marker is None:
        marker = next(
            i for i, (op, k) in enumerate(sent) if op == "put_object" and k.endswith(MARKER_NAME)
        )
    listings = [
        i for i, (op, k) in enumerate(sent) if op == "list_objects_v2" and k.endswith(target)
    ]
    assert len(listings) == 2 and listings[0] < marker < listings[1] and pb < marker
    ce.verify_export(s3_backend.base + ODD_BASE, info.version, deep=True, filesystem=fs)


def test_read_ahead_takes_the_largest_single_request_files_within_its_budget(tmp_path, monkeypatch):
    from cloud_exporter import publishing, storage_checksums
    from cloud_exporter.source import scan_source

    monkeypatch.setattr(publishing, "READ_AHEAD_BYTES", 100)
    monkeypatch.setattr(storage_checksums, "SINGLE_REQUEST_MAX", 60)
    source = tmp_path / "model"
    (source / "variables").mkdir(parents=True)
    for name, size in {
        "saved_model.pb": 10,
        "variables/big": 70,
        "variables/a": 50,
        "variables/b": 45,
        "variables/c": 30,
    }.items():
        (source / name).write_bytes(bytes([size]) * size)
    files = scan_source(source, None)
    read = publishing.read_ahead(files, sha256=True)
    # 70 is above one request; then largest first while the budget of 100 lasts (50 + 45).
    assert sorted(read) == ["variables/a", "variables/b"]
    data, digests = read["variables/a"]
    assert data == bytes([50]) * 50 and digests.sha256 is not None
    (source / "variables" / "b").unlink()  # unreadable now: left to its upload, not raised
    assert sorted(publishing.read_ahead(files, sha256=False)) == [
        "saved_model.pb",
        "variables/a",
        "variables/c",
    ]


def test_a_lost_first_claim_removes_what_it_staged_and_the_next_publish_waits_for_the_decision(
    server_backend, tmp_path, monkeypatch
):
    """Staged uploads start beside the claim's decision (automatic versions). A host whose
    clock is 3 hours ahead has committed a higher version: our first guess loses, what it
    staged is deleted before its claim, the publish commits above that version, and the next
    publish on that base stages only after its decision; once a first guess holds, the one
    after stages beside the decision again."""
    import time

    from cloud_exporter import publishing

    starts: list[int] = []
    real_start = publishing.StageWhileDeciding.start

    def counting_start(self, version):
        starts.append(version)
        return real_start(self, version)

    monkeypatch.setattr(publishing.StageWhileDeciding, "start", counting_start)
    source = fake_saved_model(tmp_path / "model", seed=23)
    base = server_backend.join("ahead" + ODD_BASE)
    ahead = int(time.time()) + 3 * 3600
    ce.publish(source, base, version=ahead, filesystem=server_backend.new_fs())
    assert starts == []  # an explicit version never stages before its decision
    staging = server_backend.strip(base) + "/.cloud-exporter-staging"
    fs = server_backend.new_fs()
    total = sum(p.stat().st_size for p in source.rglob("*") if p.is_file())
    heard: list[int] = []
    first = ce.publish(source, base, filesystem=fs, progress=heard.append)
    assert len(starts) == 1 and starts[0] < ahead < first.version  # staged, lost, bumped
    assert sum(heard) == total  # the lost claim's staged bytes are not reported
    assert server_backend.new_fs().find(staging) == []  # the lost claim's uploads are gone
    second = ce.publish(source, base, filesystem=fs)
    assert len(starts) == 1 and second.version > first.version  # no staging before deciding
    heard.clear()
    third = ce.publish(source, base, filesystem=fs, progress=heard.append)
    assert len(starts) == 2 and starts[1] == third.version  # the second's first guess held
    assert sum(heard) == total  # staged beside the decision, reported once it held
    for info in (first, second, third):
        ce.verify_export(base, info.version, deep=True, filesystem=server_backend.new_fs())
    assert server_backend.new_fs().find(staging) == []


def test_the_first_upload_per_bucket_asks_whether_s3_keeps_its_crc32c(
    s3_backend, tmp_path, monkeypatch
):
    """One HEAD (ChecksumMode) after the first upload to a bucket in a process; none after.
    Where the store hands back no CRC32C (an S3-compatible store without additional
    checksums, simulated), every upload gets its record and a resume proves by them."""
    from cloud_exporter import storage_checksums

    monkeypatch.setattr(storage_checksums, "S3_KEEPS_CRC32C", {})
    source = fake_saved_model(tmp_path / "model", seed=24)
    files = [p for p in source.rglob("*") if p.is_file()]
    fs = s3_backend.new_fs()
    sent = _record_requests(fs)
    ce.publish(source, s3_backend.join("probe" + ODD_BASE), filesystem=fs)
    heads = [k for op, k in sent if op == "head_object"]
    assert len(heads) == 1 and "/.cloud-exporter-staging/" in heads[0]
    sent.clear()
    ce.publish(source, s3_backend.join("probe" + ODD_BASE), filesystem=fs)
    assert [op for op, _ in sent if op == "head_object"] == []

    monkeypatch.setattr(storage_checksums, "S3_KEEPS_CRC32C", {})
    real = storage_checksums.stored_checksums

    def keeps_none(storage, prefix, relpaths, missing_ok=False):
        real(storage, prefix, relpaths, missing_ok)  # the requests still go out
        return dict.fromkeys(relpaths)

    monkeypatch.setattr(storage_checksums, "stored_checksums", keeps_none)
    base = s3_backend.join("keeps-none" + ODD_BASE)
    from test_resume import _die_before_copies, _uploads

    from cloud_exporter.testing import FaultyFileSystem

    _die_before_copies(s3_backend, source, base)
    listed = s3_backend.new_fs().find(s3_backend.strip(base))
    assert len([p for p in listed if f"/{RECORDS_DIRNAME}/" in p]) == len(files)
    resumer = FaultyFileSystem(s3_backend.new_fs())
    info = ce.publish(source, base, filesystem=resumer, concurrency=1)
    assert _uploads(resumer) == 0  # every file proven by its record
    ce.verify_export(base, info.version, deep=True, filesystem=s3_backend.new_fs())
