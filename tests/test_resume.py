"""Resuming an interrupted staged publish: crash at every mutating call, then publish again."""

from __future__ import annotations

import contextlib
import logging
import threading
from pathlib import Path
from typing import Any

import pytest
from invariants import check_state, committed, manifest_of, manifest_of_export
from savedmodels import fake_saved_model
from servers import Backend

import cloud_exporter as ce
from cloud_exporter.cli_format import human_size
from cloud_exporter.layout import MARKER_NAME, STAGING_DIRNAME
from cloud_exporter.resume import RECORDS_DIRNAME
from cloud_exporter.testing import FailOn, FaultyFileSystem, InjectedCrash


def _source(tmp_path: Path, seed: int = 1, shard: int = 64 << 10) -> Path:
    root = fake_saved_model(tmp_path / f"src-{seed}", seed=seed, shard_bytes=shard)
    (root / "variables" / "variables.data-00001-of-00002").write_bytes(bytes(range(256)) * 512)
    return root


def _is_data_upload(call) -> bool:
    """A model file sent from the client: put_file, or pipe_file (small files are sent with
    the bytes they were hashed from) of anything but claims, upload records and markers."""
    if call.method == "put_file":
        return True
    target = call.targets[0] if call.targets else call.paths[0]
    return (
        call.method == "pipe_file"
        and RECORDS_DIRNAME not in target
        and not target.endswith((".claim", MARKER_NAME))
    )


def _uploads(fs: FaultyFileSystem) -> int:
    return sum(1 for c in fs.calls if _is_data_upload(c) and c.applied)


def test_crash_at_every_mutating_call_then_resume(
    server_backend: Backend, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="cloud_exporter.resume")
    source = _source(tmp_path)
    n_files = len(manifest_of(source))
    clean = FaultyFileSystem(server_backend.new_fs())
    ce.publish(source, server_backend.join("count"), filesystem=clean, concurrency=1)
    total = clean.mutating_calls
    checker = server_backend.new_fs()
    for k in range(1, total + 1):
        base = server_backend.join(f"crash-{k}")
        dying = FaultyFileSystem(server_backend.new_fs(), crash_after=k)
        with contextlib.suppress(InjectedCrash):
            ce.publish(source, base, filesystem=dying, concurrency=1)
        # S3 and GCS keep each staged object's CRC32C: every staged object is proven (an
        # object exists only once its upload completed), and no record is written.
        staged = [
            path
            for path in checker.find(server_backend.strip(base))
            if f"/{STAGING_DIRNAME}/" in path and not path.endswith(".claim")
        ]
        assert not [p for p in staged if RECORDS_DIRNAME in p], f"crash at {k}: no records"
        proven = len(staged)
        before = committed(checker, server_backend.strip(base))
        resumer = FaultyFileSystem(server_backend.new_fs())
        caplog.clear()
        if before:  # the crash hit cleanup, after the commit: nothing to resume
            continue
        info = ce.publish(source, base, filesystem=resumer, concurrency=1)
        now = check_state(
            checker,
            server_backend.strip(base),
            before,
            trees=[manifest_of(source)],
            context=f"crash at {k}",
        )
        assert list(now) == [info.version], f"crash at {k}: exactly one committed export"
        ce.verify_export(base, info.version, deep=True, filesystem=server_backend.new_fs())
        # Every file the dead publisher proved is copied, not uploaded again.
        assert _uploads(resumer) == n_files - proven, f"crash at {k}"
        if proven:
            assert f"reused {proven} staged files" in caplog.text


def test_resume_reuses_only_what_is_proven_identical(
    server_backend: Backend, tmp_path: Path
) -> None:
    source = _source(tmp_path)
    base = server_backend.base
    _die_before_copies(server_backend, source, base)
    # The shard changes on disk (same size, other bytes): its staged copy must not be reused.
    shard = source / "variables" / "variables.data-00000-of-00001"
    shard.write_bytes(bytes(reversed(shard.read_bytes())))
    resumer = FaultyFileSystem(server_backend.new_fs())
    info = ce.publish(source, base, filesystem=resumer, concurrency=1)
    uploaded = {c.targets[-1].rsplit("/", 1)[-1] for c in resumer.calls if _is_data_upload(c)}
    assert uploaded == {shard.name}
    ce.verify_export(base, info.version, deep=True, filesystem=server_backend.new_fs())
    assert manifest_of_export(info) == manifest_of(source)
    # resume=False uploads everything again.
    again = FaultyFileSystem(server_backend.new_fs())
    ce.publish(source, base, filesystem=again, concurrency=1, resume=False)
    assert _uploads(again) == len(info.files)


def test_two_resumers_end_with_distinct_complete_versions(
    server_backend: Backend, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="cloud_exporter.resume")
    source = _source(tmp_path)
    base = server_backend.base
    dying = FaultyFileSystem(server_backend.new_fs(), crash_after=6)
    with pytest.raises(InjectedCrash):
        ce.publish(source, base, filesystem=dying, concurrency=1)
    results: list[ce.ExportInfo] = []
    errors: list[BaseException] = []

    def resume() -> None:
        try:
            results.append(ce.publish(source, base, filesystem=server_backend.new_fs()))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=resume) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors and len({r.version for r in results}) == 2
    checker = server_backend.new_fs()
    now = check_state(checker, server_backend.strip(base), {}, trees=[manifest_of(source)])
    assert sorted(now) == sorted(r.version for r in results)
    assert caplog.text.count("resumed: reused") == 2  # both copied from the dead one's staging
    # Only the dead publisher's claim and staging are left, for prune (it cannot be proven dead).
    staged = [p for p in checker.find(server_backend.strip(base)) if STAGING_DIRNAME in p]
    owners = {p.split(STAGING_DIRNAME + "/")[1].split("/")[0].split(".claim")[0] for p in staged}
    assert len(owners) == 2 and len({o.split("-")[0] for o in owners}) == 1, owners


def test_a_transient_failure_keeps_its_uploads_for_the_resume(
    server_backend: Backend, tmp_path: Path
) -> None:
    source = _source(tmp_path)
    base = server_backend.base
    # The third upload keeps failing past a one-attempt retry budget (network gone). Small
    # files go up with pipe_file, as do claims and upload records: count the data uploads.
    data_uploads = [0]

    def from_the_third_upload(method: str, path: str) -> bool:
        if RECORDS_DIRNAME in path or path.endswith((".claim", MARKER_NAME)):
            return False
        data_uploads[0] += 1
        return data_uploads[0] >= 3

    outage = FailOn(method="pipe_file", predicate=from_the_third_upload, error=None, times=None)
    flaky = FaultyFileSystem(server_backend.new_fs(), fail_on=[outage])
    with pytest.raises(ce.TransientStorageError):
        ce.publish(
            source, base, filesystem=flaky, concurrency=1, retry=ce.RetryPolicy(max_attempts=1)
        )
    done_before = _uploads(flaky)
    assert done_before == 2
    resumer = FaultyFileSystem(server_backend.new_fs())
    info = ce.publish(source, base, filesystem=resumer, concurrency=1)
    assert _uploads(resumer) == len(info.files) - done_before
    ce.verify_export(base, info.version, deep=True, filesystem=server_backend.new_fs())
    # A permanent failure cleans its staging up as before.
    # pipe_file 1 is the claim, 2 the first upload.
    denied = FailOn(method="pipe_file", nth=2, error=lambda: PermissionError(13, "no"), times=None)
    with pytest.raises(ce.PermissionDeniedError):
        ce.publish(
            source,
            server_backend.join("denied"),
            filesystem=FaultyFileSystem(server_backend.new_fs(), fail_on=[denied]),
            concurrency=1,
        )
    leftovers = server_backend.new_fs()
    with contextlib.suppress(FileNotFoundError):
        assert leftovers.find(server_backend.strip(server_backend.join("denied"))) == []


def _die_before_copies(backend: Backend, source: Path, base: str, **options: Any) -> None:
    """Publish until every upload (and record) is staged, then crash at the first copy."""
    counting = FaultyFileSystem(backend.new_fs())
    ce.publish(source, backend.join("count-copy"), filesystem=counting, concurrency=1, **options)
    mutations = [c for c in counting.calls if c.mutating]
    first_copy = next(i for i, c in enumerate(mutations) if c.method == "cp_file")
    with pytest.raises(InjectedCrash):
        dying = FaultyFileSystem(backend.new_fs(), crash_after=first_copy + 1)
        ce.publish(source, base, filesystem=dying, concurrency=1, **options)


def test_a_sha256_publish_records_each_upload_and_resumes_from_the_records(
    server_backend: Backend, tmp_path: Path
) -> None:
    """With SHA-256 recorded (which the store does not keep) each upload gets a record; the
    resume proves by it and the new manifest carries every file's SHA-256."""
    source = _source(tmp_path)
    base = server_backend.join("sha256")
    _die_before_copies(server_backend, source, base, checksum="sha256")
    listed = server_backend.new_fs().find(server_backend.strip(base))
    records = [p for p in listed if RECORDS_DIRNAME in p]
    assert len(records) == len(manifest_of(source))
    resumer = FaultyFileSystem(server_backend.new_fs())
    info = ce.publish(source, base, filesystem=resumer, concurrency=1, checksum="sha256")
    assert _uploads(resumer) == 0
    assert all(f.sha256 for f in info.files)
    ce.verify_export(base, info.version, deep=True, filesystem=server_backend.new_fs())


def test_cli_resumes_by_default_and_no_resume_opts_out(s3_backend: Backend, tmp_path: Path) -> None:
    import json

    import test_cli as cli_helpers  # the CLI runner (a module import: its tests stay there)

    source = _source(tmp_path)
    sizes = [p.stat().st_size for p in source.rglob("*") if p.is_file()]
    n_files, n_bytes = len(sizes), sum(sizes)
    opts = cli_helpers.options(s3_backend)
    for flags, reused in (([], True), (["--no-resume"], False), (["--json"], True)):
        base = s3_backend.join(f"cli-{'-'.join(flags) or 'default'}")
        _die_before_copies(s3_backend, source, base)  # every file is staged and recorded
        out = cli_helpers.cli("publish", str(source), base, "-v", *opts, *flags)
        assert out.returncode == 0, out.stderr
        assert (f"resumed: reused {n_files} staged files" in out.stderr) is reused, out.stderr
        assert len(ce.list_exports(base, storage_options=s3_backend.storage_options)) == 1
        if "--json" in flags:
            doc = json.loads(out.stdout)
            assert (doc["reused_files"], doc["reused_bytes"]) == (n_files, n_bytes)
        elif reused:
            want = f"resumed: reused {n_files} files ({human_size(n_bytes)}) staged by"
            assert want in out.stdout and out.stdout.rstrip().endswith("uploaded 0"), out.stdout
        else:
            assert "resumed" not in out.stdout and out.stdout.startswith("published "), out.stdout
