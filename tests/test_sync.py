"""cloud-exporter sync, the puller for TF Serving: local disk, memory, moto, fake-gcs-server."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from savedmodels import fake_saved_model, tree
from test_cli import cli, options

import cloud_exporter as ce
from cloud_exporter import _sync_fetch
from cloud_exporter import sync as sync_mod
from cloud_exporter.layout import MARKER_NAME
from cloud_exporter.retry import RetryPolicy
from cloud_exporter.sync import SYNC_RECORD_NAME, SYNC_STAGING_DIRNAME, watch
from cloud_exporter.testing import FailOn, FaultyFileSystem, InjectedCrash

FAST = RetryPolicy(max_attempts=1)


def publish_n(backend, tmp_path: Path, n: int, base: str | None = None) -> list[ce.ExportInfo]:
    out = []
    for i in range(n):
        src = fake_saved_model(tmp_path / f"src-{len(os.listdir(tmp_path))}-{i}", seed=i)
        out.append(ce.publish(src, base or backend.base, filesystem=backend.fs))
    return out


def local_versions(local: Path) -> list[int]:
    if not local.exists():
        return []
    return sorted(int(p.name) for p in local.iterdir() if p.name.isdigit())


def assert_complete(local: Path, info: ce.ExportInfo) -> None:
    """The synced dir holds exactly the export's files (verified), its marker and the record."""
    got = tree(local / str(info.version))
    assert set(got) == {f.path for f in info.files} | {MARKER_NAME, SYNC_RECORD_NAME}
    for f in info.files:
        assert len(got[f.path]) == f.size
        assert _sync_fetch._mismatch(str(local / str(info.version) / f.path), f) is None
    assert json.loads(got[SYNC_RECORD_NAME])["version"] == info.version


def staging_leftovers(local: Path) -> list[str]:
    staging = local / SYNC_STAGING_DIRNAME
    return sorted(os.listdir(staging)) if staging.exists() else []


class Poller(threading.Thread):
    """Like TF Serving: polls LOCAL_DIR, and for every integer dir checks each manifest file."""

    def __init__(self, local: Path) -> None:
        super().__init__(daemon=True)
        self.local, self.done, self.problems, self.checks = local, threading.Event(), [], 0

    def run(self) -> None:
        while not self.done.is_set():
            for name in os.listdir(self.local) if self.local.exists() else []:
                if name.isdigit():
                    self._check(self.local / name)

    def _check(self, vdir: Path) -> None:
        try:
            marker = json.loads((vdir / MARKER_NAME).read_bytes())
            missing = [f["path"] for f in marker["files"] if not (vdir / f["path"]).is_file()]
        except FileNotFoundError:
            missing = [MARKER_NAME]
        if missing and vdir.exists():  # gone entirely is fine: it was renamed out of sight
            self.problems.append((vdir.name, missing))
        self.checks += 1

    def __enter__(self) -> Poller:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.join()


def test_sync_downloads_verifies_and_is_idempotent(backend, tmp_path):
    (tmp_path / "src").mkdir()
    infos = publish_n(backend, tmp_path / "src", 2)
    local = tmp_path / "serving"
    progress: list[int] = []
    added = ce.sync_exports(
        backend.base, local, filesystem=backend.new_fs(), progress=progress.append
    )
    assert [i.version for i in added] == [i.version for i in infos]
    assert sum(progress) == sum(i.total_size for i in infos)
    for info in infos:
        assert_complete(local, info)
        marker = (local / str(info.version) / MARKER_NAME).read_bytes()
        assert marker == backend.fs.cat_file(backend.strip(info.uri) + "/" + MARKER_NAME)
    assert ce.sync_exports(backend.base, local, filesystem=backend.new_fs()) == []
    assert staging_leftovers(local) == []


def test_poller_never_sees_a_partial_version(backend, tmp_path):
    (tmp_path / "src").mkdir()
    local = tmp_path / "serving"
    with Poller(local) as poller:
        for _ in range(4):
            publish_n(backend, tmp_path / "src", 1)
            ce.sync_exports(backend.base, local, keep=2, filesystem=backend.new_fs())
    assert poller.problems == []
    assert poller.checks > 0
    assert len(local_versions(local)) == 2


def _data_reads(fs: FaultyFileSystem) -> tuple[int, int]:
    """(calls, files) of the reads of export files (large: get_file; small: batched cat, or
    cat_file where a batch fell back), markers excluded."""
    calls = files = 0
    for c in fs.calls:
        if c.method in ("get_file", "cat", "cat_file") and c.outcome == "ok":
            data = [p for p in c.paths if not p.endswith(MARKER_NAME)]
            calls, files = calls + bool(data), files + len(data)
    return calls, files


@pytest.mark.parametrize("backend", ["local", "s3", "gcs"], indirect=True)
def test_crash_at_each_download_then_rerun_converges_and_resumes(backend, tmp_path):
    (tmp_path / "src").mkdir()
    infos = publish_n(backend, tmp_path / "src", 2)
    files = sum(len(i.files) for i in infos)
    clean = FaultyFileSystem(backend.new_fs())
    ce.sync_exports(backend.base, tmp_path / "clean", filesystem=clean, concurrency=1)
    calls, fetched = _data_reads(clean)
    assert fetched == files and calls < files  # small files come in batches
    for k in range(1, files + 1):  # crash at the call that reads the k-th file
        local = tmp_path / f"serving-{k}"
        seen = [0]

        def dead_from_k(method, path, seen=seen, k=k):  # the process is gone from file k on
            if method in ("get_file", "cat", "cat_file") and not path.endswith(MARKER_NAME):
                seen[0] += 1
            return seen[0] >= k

        crash = FailOn(predicate=dead_from_k, error=InjectedCrash, times=None)
        faulty = FaultyFileSystem(backend.new_fs(), fail_on=[crash])
        with Poller(local) as poller, pytest.raises(InjectedCrash):
            ce.sync_exports(backend.base, local, filesystem=faulty, concurrency=1)
        assert poller.problems == []
        staged = sum(
            len(names) for _, _, names in os.walk(local / SYNC_STAGING_DIRNAME)
        )  # verified files the crashed run left for the next one
        present = local_versions(local)  # versions completed before the crash
        todo = sum(len(i.files) for i in infos if i.version not in present)
        counting = FaultyFileSystem(backend.new_fs())
        ce.sync_exports(backend.base, local, filesystem=counting, concurrency=1)
        assert local_versions(local) == [i.version for i in infos]
        for info in infos:
            assert_complete(local, info)
        assert staging_leftovers(local) == []
        # Resume: files verified before the crash are not downloaded again.
        assert _data_reads(counting)[1] == todo - staged, f"crash at file {k}"


@pytest.mark.parametrize("step", ["marker", "record", "rename", "keep-rename"])
def test_crash_at_each_local_step_then_rerun_converges(backend, tmp_path, monkeypatch, step):
    (tmp_path / "src").mkdir()
    infos = publish_n(backend, tmp_path / "src", 3)
    local = tmp_path / "serving"
    ce.sync_exports(backend.base, local, keep=1, filesystem=backend.new_fs())  # newest only
    infos += publish_n(backend, tmp_path / "src", 1)
    real_write, real_rename = sync_mod._write_file, os.rename

    def write(path, data):
        if os.path.basename(path) == {"marker": MARKER_NAME, "record": SYNC_RECORD_NAME}.get(step):
            raise InjectedCrash(step)
        real_write(path, data)

    def rename(src, dst):
        into_staging = SYNC_STAGING_DIRNAME in str(dst)
        if (step == "rename" and not into_staging) or (step == "keep-rename" and into_staging):
            raise InjectedCrash(step)
        real_rename(src, dst)

    monkeypatch.setattr(sync_mod, "_write_file", write)
    monkeypatch.setattr(os, "rename", rename)
    with Poller(local) as poller, pytest.raises(InjectedCrash):
        ce.sync_exports(backend.base, local, keep=1, filesystem=backend.new_fs())
    monkeypatch.undo()
    assert poller.problems == []
    ce.sync_exports(backend.base, local, keep=1, filesystem=backend.new_fs())
    assert local_versions(local) == [infos[-1].version]
    assert_complete(local, infos[-1])
    assert staging_leftovers(local) == []


def test_keep_deletes_only_synced_copies_after_the_newer_is_in_place(backend, tmp_path):
    (tmp_path / "src").mkdir()
    local = tmp_path / "serving"
    foreign = local / "7"  # a version dir someone else put there: never deleted
    foreign.mkdir(parents=True)
    (foreign / "saved_model.pb").write_bytes(b"mine")
    infos = publish_n(backend, tmp_path / "src", 3)
    added = ce.sync_exports(backend.base, local, keep=2, filesystem=backend.new_fs())
    assert [i.version for i in added] == [i.version for i in infos[1:]]
    assert local_versions(local) == [7, infos[1].version, infos[2].version]
    infos += publish_n(backend, tmp_path / "src", 1)
    deleted_while_missing = []
    real = sync_mod._sync_one

    def spy(storage, base, root_dir, staging, info, progress, stop):
        deleted_while_missing.append(local_versions(local))
        real(storage, base, root_dir, staging, info, progress, stop)

    sync_mod._sync_one = spy
    try:
        ce.sync_exports(backend.base, local, keep=2, filesystem=backend.new_fs())
    finally:
        sync_mod._sync_one = real
    # Before the download of the newest version both older copies were still in place.
    assert deleted_while_missing == [[7, infos[1].version, infos[2].version]]
    assert local_versions(local) == [7, infos[2].version, infos[3].version]
    assert (foreign / "saved_model.pb").read_bytes() == b"mine"


def test_existing_foreign_dir_with_a_synced_version_number_is_left_alone(backend, tmp_path, caplog):
    (tmp_path / "src").mkdir()
    (info,) = publish_n(backend, tmp_path / "src", 1)
    local = tmp_path / "serving"
    (local / str(info.version)).mkdir(parents=True)
    with caplog.at_level(logging.WARNING, logger="cloud_exporter.sync"):
        assert ce.sync_exports(backend.base, local, keep=1, filesystem=backend.new_fs()) == []
    assert os.listdir(local / str(info.version)) == []
    assert "not created by sync" in caplog.text


def test_version_pruned_during_download_is_abandoned(backend, tmp_path, monkeypatch, caplog):
    (tmp_path / "src").mkdir()
    old, new = publish_n(backend, tmp_path / "src", 2)
    real_download, real_read_many = ce.storage.Storage.download, ce.storage.Storage.read_many
    pruned = []

    def prune_on_first_data_read(paths):  # a prune lands once the download has begun
        data = [p for p in paths if str(new.version) in p and not p.endswith(MARKER_NAME)]
        if data and not pruned:
            pruned.append(data[0])
            fs = backend.new_fs()
            fs.rm_file(backend.strip(new.uri) + "/" + MARKER_NAME)
            fs.rm(backend.strip(new.uri), recursive=True)

    def download(self, path, local_path, **kw):
        prune_on_first_data_read([path])
        return real_download(self, path, local_path, **kw)

    def read_many(self, paths, limit):
        prune_on_first_data_read(paths)
        return real_read_many(self, paths, limit)

    monkeypatch.setattr(ce.storage.Storage, "download", download)
    monkeypatch.setattr(ce.storage.Storage, "read_many", read_many)
    local = tmp_path / "serving"
    with caplog.at_level(logging.INFO, logger="cloud_exporter.sync"):
        added = ce.sync_exports(backend.base, local, filesystem=backend.new_fs())
    assert pruned
    assert [i.version for i in added] == [old.version]
    assert local_versions(local) == [old.version]
    assert staging_leftovers(local) == []
    assert "pruned from the base during its download" in caplog.text


@pytest.mark.parametrize("name", ["saved_model.pb", "variables/variables.data-00000-of-00001"])
def test_corrupt_remote_file_is_not_synced(backend, tmp_path, caplog, name):
    """Small files are hashed after the download, large ones (>= 8 MiB) while it runs."""
    src = fake_saved_model(tmp_path / "src", shard_bytes=9 << 20)
    info = ce.publish(src, backend.base, filesystem=backend.fs)
    target = backend.strip(info.uri) + "/" + name
    size = backend.fs.size(target)
    backend.fs.pipe_file(target, b"X" * size)  # same size, other bytes
    local = tmp_path / "serving"
    with caplog.at_level(logging.ERROR, logger="cloud_exporter.sync"):
        assert ce.sync_exports(backend.base, local, filesystem=backend.new_fs()) == []
    assert local_versions(local) == []
    assert staging_leftovers(local) == []
    assert "crc32c mismatch" in caplog.text


@pytest.mark.parametrize("backend", ["gcs"], indirect=True)
def test_ranged_gcs_downloads_are_verified(backend, tmp_path, monkeypatch, caplog):
    """GCS objects from RANGED_BYTES on come down in concurrent ranges, then are hashed once:
    lowered here so that a 17 MiB shard (three 8 MiB ranges) takes that path."""
    monkeypatch.setattr(_sync_fetch, "RANGED_BYTES", 1 << 20)
    real, ranged = ce.storage.Storage.download, []

    def download(self, path, local_path, ranged_=False, **kw):
        ranged.append(kw.get("ranged", ranged_))
        return real(self, path, local_path, **kw)

    monkeypatch.setattr(ce.storage.Storage, "download", download)
    src = fake_saved_model(tmp_path / "src", shard_bytes=(17 << 20) + 3)
    info = ce.publish(src, backend.base, filesystem=backend.fs)
    ce.sync_exports(backend.base, tmp_path / "serving", filesystem=backend.new_fs())
    assert_complete(tmp_path / "serving", info)
    assert ranged == [True]  # the shard; the small files came in a batched read
    target = backend.strip(info.uri) + "/variables/variables.data-00000-of-00001"
    backend.fs.pipe_file(target, b"X" * ((17 << 20) + 3))  # same size, other bytes
    local = tmp_path / "serving-2"
    with caplog.at_level(logging.ERROR, logger="cloud_exporter.sync"):
        assert ce.sync_exports(backend.base, local, filesystem=backend.new_fs()) == []
    assert local_versions(local) == [] and staging_leftovers(local) == []
    assert "crc32c mismatch" in caplog.text


@pytest.mark.parametrize("backend", ["s3"], indirect=True)
def test_s3_downloads_stream_instead_of_holding_parts_in_memory(backend, tmp_path, monkeypatch):
    """s3fs fetches an object above its block size as concurrent parts, each read whole into
    memory (a sync of eight 100 MiB files grew by 489 MiB). Sync streams every S3 object front
    to back instead: with the block size lowered to 1 MiB, the 17 MiB shard takes no parts."""
    import s3fs.core

    parts: list[str] = []
    real = s3fs.core.S3FileSystem._download_file_part_concurrent

    async def recording(self, bucket, key, *args, **kwargs):
        parts.append(key)
        return await real(self, bucket, key, *args, **kwargs)

    monkeypatch.setattr(s3fs.core.S3FileSystem, "_download_file_part_concurrent", recording)
    src = fake_saved_model(tmp_path / "src", shard_bytes=(17 << 20) + 3)
    info = ce.publish(src, backend.base, filesystem=backend.fs)
    small_blocks = s3fs.S3FileSystem(
        **backend.storage_options, default_block_size=1 << 20, skip_instance_cache=True
    )
    small_blocks.get_file(  # the control: s3fs's own default takes parts at this block size
        backend.strip(info.uri) + "/variables/variables.data-00000-of-00001",
        str(tmp_path / "control"),
    )
    assert len(parts) == 1
    ce.sync_exports(backend.base, tmp_path / "serving", filesystem=small_blocks)
    assert_complete(tmp_path / "serving", info)
    assert len(parts) == 1  # none from sync


def test_bad_arguments_get_typed_errors(tmp_path):
    base = tmp_path / "base"
    base.mkdir()
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(ce.InvalidArgumentError, match="not a directory"):
        ce.sync_exports(str(base), a_file)
    for keep in (0, -1, True, "2", 1.5):
        with pytest.raises(ce.InvalidArgumentError, match="keep must be"):
            ce.sync_exports(str(base), tmp_path / "l", keep=keep)
    with pytest.raises(ce.LocationNotFoundError, match="does not exist"):
        ce.sync_exports(str(tmp_path / "missing"), tmp_path / "l")
    with pytest.raises(ce.InvalidArgumentError, match="local path"):
        ce.sync_exports(str(base), "s3://bucket/x")
    with pytest.raises(ce.InvalidArgumentError, match="interval"):
        watch(str(base), tmp_path / "l", interval=0)


@pytest.mark.parametrize("backend", ["s3", "gcs"], indirect=True)
def test_missing_bucket_is_a_typed_error(backend, tmp_path):
    base = f"{backend.protocol}://ce-no-such-bucket-{os.getpid()}/models"
    with pytest.raises(ce.LocationNotFoundError):
        ce.sync_exports(base, tmp_path / "l", filesystem=backend.new_fs(), retry=FAST)


def test_glob_characters_and_unicode_in_names(backend, tmp_path):
    base = backend.scratch.rstrip("/") + "/exp[1] *?#% ü/models"
    src = fake_saved_model(tmp_path / "src", seed=3)
    (src / "assets" / "vocab [a]*?#%ü.txt").write_text("odd")
    info = ce.publish(src, base, filesystem=backend.fs)
    local = tmp_path / "serv[1]*?ü"
    assert [i.version for i in ce.sync_exports(base, local, filesystem=backend.new_fs())] == [
        info.version
    ]
    assert_complete(local, info)
    assert (local / str(info.version) / "assets" / "vocab [a]*?#%ü.txt").read_text() == "odd"


def test_watch_survives_transient_errors_and_stops(backend, tmp_path):
    (tmp_path / "src").mkdir()
    (info,) = publish_n(backend, tmp_path / "src", 1)
    faulty = FaultyFileSystem(backend.new_fs(), fail_on=[FailOn(method="find", times=4)])
    stop, seen = threading.Event(), []
    thread = threading.Thread(
        target=watch,
        args=(backend.base, tmp_path / "serving"),
        kwargs={
            "interval": 0.01,
            "max_backoff": 0.05,
            "stop": stop,
            "on_synced": lambda added: (seen.extend(added), stop.set()),
            "filesystem": faulty,
            "retry": FAST,
        },
    )
    thread.start()
    thread.join(60)
    stop.set()
    assert not thread.is_alive()
    assert [i.version for i in seen] == [info.version]
    assert faulty.fail_on[0].fired == 4


@pytest.mark.tensorflow
@pytest.mark.parametrize("backend", ["local", "s3", "gcs"], indirect=True)
def test_tensorflow_loads_the_synced_version(backend, tmp_path):
    tf_mod = pytest.importorskip("tensorflow")
    from cloud_exporter.cli_demo import build_model

    build_model(str(tmp_path / "model"), slope=3.0)
    info = ce.publish(tmp_path / "model", backend.base, filesystem=backend.fs)
    local = tmp_path / "serving"
    ce.sync_exports(backend.base, local, filesystem=backend.new_fs())
    loaded = tf_mod.saved_model.load(str(local / str(info.version)))
    y = loaded.signatures["serving_default"](x=tf_mod.constant([2.0, -1.0]))["y"].numpy()
    assert y.tolist() == [7.0, -2.0]


@pytest.mark.parametrize("backend", ["local", "s3", "gcs"], indirect=True)
def test_cli_sync_once_json_keep_and_errors(backend, tmp_path):
    (tmp_path / "src").mkdir()
    infos = publish_n(backend, tmp_path / "src", 3)
    local = tmp_path / "serving"
    out = cli("sync", backend.base, str(local), "--keep", "2", "--json", *options(backend))
    assert out.returncode == 0, out.stderr
    assert [d["version"] for d in json.loads(out.stdout)] == [i.version for i in infos[1:]]
    assert local_versions(local) == [i.version for i in infos[1:]]
    again = cli("sync", backend.base, str(local), "--keep", "2", *options(backend))
    assert (again.returncode, again.stdout.strip()) == (0, "up to date")
    bad = cli("sync", backend.base, str(local), "--keep", "0", *options(backend))
    assert bad.returncode == 2 and "keep must be" in bad.stderr
    (tmp_path / "f").write_text("x")
    bad = cli("sync", backend.base, str(tmp_path / "f"), *options(backend))
    assert bad.returncode == 2 and "not a directory" in bad.stderr


@pytest.mark.parametrize("backend", ["local", "s3", "gcs"], indirect=True)
def test_cli_watch_syncs_new_versions_and_exits_cleanly_on_sigterm(backend, tmp_path):
    (tmp_path / "src").mkdir()
    first = publish_n(backend, tmp_path / "src", 1)[0]
    local = tmp_path / "serving"
    argv = [sys.executable, "-m", "cloud_exporter", "sync", backend.base, str(local), "--watch"]
    proc = subprocess.Popen(
        [*argv, "--interval", "0.2", "--json", "-v", *options(backend)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for(lambda: local_versions(local) == [first.version])
        second = publish_n(backend, tmp_path / "src", 1)[0]
        _wait_for(lambda: local_versions(local) == [first.version, second.version])
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            print(proc.communicate()[1][-3000:])
    assert proc.returncode == 0, stderr
    lines = [json.loads(line) for line in stdout.splitlines()]
    assert [d["version"] for batch in lines for d in batch] == [first.version, second.version]
    assert staging_leftovers(local) == []


def test_sigterm_during_a_download_leaves_no_partial_version(tmp_path):
    """A big file keeps the download busy; SIGTERM abandons it: no version dir, no part file."""
    src = fake_saved_model(tmp_path / "src", seed=1)
    big = src / "variables" / "variables.data-00000-of-00001"
    big.write_bytes(os.urandom(1 << 20) * 200)
    base = tmp_path / "base"
    ce.publish(src, base)
    local = tmp_path / "serving"
    proc = subprocess.Popen(
        [sys.executable, "-m", "cloud_exporter", "sync", f"file://{base}", str(local), "--watch"],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for(lambda: any((local / SYNC_STAGING_DIRNAME).glob("*.parts")), timeout=60)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    assert not list((local / SYNC_STAGING_DIRNAME).glob("*.parts"))
    versions = local_versions(local)
    if versions:  # the download won the race with the signal: then it is complete
        assert_complete(local, ce.list_exports(str(base))[0])


def test_sigkill_during_a_download_then_rerun_converges(tmp_path):
    src = fake_saved_model(tmp_path / "src", seed=2)
    (src / "variables" / "variables.data-00000-of-00001").write_bytes(os.urandom(1 << 20) * 200)
    base = tmp_path / "base"
    info = ce.publish(src, base)
    local = tmp_path / "serving"
    proc = subprocess.Popen([sys.executable, "-m", "cloud_exporter", "sync", str(base), str(local)])
    try:
        _wait_for(lambda: any((local / SYNC_STAGING_DIRNAME).glob("*.parts")), timeout=60)
        proc.kill()
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert local_versions(local) == []
    out = cli("sync", str(base), str(local), "--json")
    assert out.returncode == 0, out.stderr
    assert [d["version"] for d in json.loads(out.stdout)] == [info.version]
    assert_complete(local, info)
    assert staging_leftovers(local) == []


def _wait_for(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


@pytest.mark.parametrize("shard", [4096, 9 << 20], ids=["hashed-after", "hashed-during"])
def test_sha256_exports_sync_and_are_checked_by_both_sums(backend, tmp_path, shard):
    """An export published with SHA-256 syncs; each file is checked by CRC32C and SHA-256."""
    src = fake_saved_model(tmp_path / "src", shard_bytes=shard)
    info = ce.publish(src, backend.base, filesystem=backend.fs, checksum="sha256")
    assert all(f.sha256 and f.crc32c for f in info.files)
    local = tmp_path / "serving"
    added = ce.sync_exports(backend.base, local, filesystem=backend.new_fs())
    assert [i.version for i in added] == [info.version]
    synced = tree(local / str(info.version))
    ours = (MARKER_NAME, SYNC_RECORD_NAME)
    assert {k: v for k, v in synced.items() if k not in ours} == tree(src)


def test_a_sha256_mismatch_alone_refuses_the_version(backend, tmp_path, caplog):
    """Matching size and CRC32C are not enough when the marker also records a SHA-256."""
    src = fake_saved_model(tmp_path / "src")
    info = ce.publish(src, backend.base, filesystem=backend.fs, checksum="sha256")
    marker = backend.strip(info.uri) + "/" + MARKER_NAME
    doc = json.loads(backend.fs.cat_file(marker))
    doc["files"][0]["sha256"] = "0" * 64
    backend.fs.pipe_file(marker, json.dumps(doc).encode())
    local = tmp_path / "serving"
    with caplog.at_level(logging.ERROR, logger="cloud_exporter.sync"):
        assert ce.sync_exports(backend.base, local, filesystem=backend.new_fs()) == []
    assert "sha256 mismatch" in caplog.text
    assert local_versions(local) == []
