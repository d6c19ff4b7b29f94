"""The requests a publish sends to the S3 server, as s3fs sends them (docs/protocol.md,
"Requests per publish, in order"): what the protocol needs and nothing to look up sizes."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from savedmodels import fake_saved_model

import cloud_exporter as ce
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


@pytest.mark.parametrize("resume", [True, False])
def test_a_staged_s3_publish_copies_without_looking_up_sizes(s3_backend, tmp_path, resume):
    source = fake_saved_model(tmp_path / "model", seed=21)
    files = sorted(p.relative_to(source).as_posix() for p in source.rglob("*") if p.is_file())
    fs = s3_backend.new_fs()
    sent = _record_requests(fs)
    info = ce.publish(source, s3_backend.base + ODD_BASE, filesystem=fs, resume=resume)
    ops = [op for op, _ in sent]
    assert "head_object" not in ops  # no size look-up before a copy, no HEAD after a listing
    assert ops.count("copy_object") == len(files)
    # Listings: staging (resume only), the base's children, pre- and post-commit checks.
    assert ops.count("list_objects_v2") == (4 if resume else 3)
    records = [k for op, k in sent if op == "put_object" and f"/{RECORDS_DIRNAME}/" in k]
    assert len(records) == (len(files) if resume else 0)
    marker = next(
        i for i, (op, k) in enumerate(sent) if op == "put_object" and k.endswith(MARKER_NAME)
    )
    record_puts = [i for i, (op, k) in enumerate(sent) if op == "put_object" and k in records]
    assert all(i < marker for i in record_puts)  # written in the background, before the commit
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
