"""The commit protocol on every backend: round trip, modes, conflicts, races, corruption."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from interleave import run_before
from savedmodels import fake_saved_model, tree, write_object

import cloud_exporter as ce
from cloud_exporter import publishing as publish_module
from cloud_exporter.layout import MARKER_NAME, STAGING_DIRNAME
from cloud_exporter.testing import FaultyFileSystem


@pytest.fixture
def source(tmp_path: Path) -> Path:
    return fake_saved_model(tmp_path / "model", seed=1)


@pytest.fixture
def extra_file(tmp_path: Path) -> Path:
    path = tmp_path / "extra.json"
    path.write_text('{"labels": ["cat", "dog"]}')
    return path


@pytest.mark.parametrize("mode", ["staged", "direct"])
def test_round_trip_with_assets_extra(backend, source, extra_file, tmp_path, mode):
    info = ce.publish(
        source,
        backend.base,
        assets_extra={"labels/extra.json": str(extra_file)},
        metadata={"global_step": 7, "metrics": {"loss": 0.25}},
        mode=mode,
        storage_options=backend.storage_options,
    )
    assert len(str(info.version)) == 10
    assert info.metadata == {"global_step": 7, "metrics": {"loss": 0.25}}
    assert {f.path for f in info.files} == set(tree(source)) | {"assets.extra/labels/extra.json"}

    listed = ce.list_exports(backend.base, storage_options=backend.storage_options)
    assert [e.version for e in listed] == [info.version]
    assert ce.latest_export(backend.base, filesystem=backend.new_fs()).version == info.version
    verified = ce.verify_export(backend.base, info.version, deep=True, filesystem=backend.new_fs())
    assert verified.files == info.files

    copied = tree(backend.download(info.uri, tmp_path / "copy"))
    expected = tree(source) | {"assets.extra/labels/extra.json": extra_file.read_bytes()}
    assert {k: v for k, v in copied.items() if k != MARKER_NAME} == expected
    # Nothing is left in staging after a successful publish (the directory itself may stay).
    staging = backend.strip(backend.join(STAGING_DIRNAME))
    assert backend.new_fs().find(staging) == []


def test_versions_increase_and_latest_is_highest(backend, source):
    versions = [ce.publish(source, backend.base, filesystem=backend.fs).version for _ in range(3)]
    assert versions == sorted(set(versions))
    assert ce.latest_export(backend.base, filesystem=backend.fs).version == versions[-1]


def test_explicit_version_conflict(backend, source, tmp_path):
    ce.publish(source, backend.base, version=42, filesystem=backend.fs)
    other = fake_saved_model(tmp_path / "other", seed=2)
    with pytest.raises(ce.VersionConflictError, match="42"):
        ce.publish(other, backend.base, version=42, filesystem=backend.new_fs())
    info = ce.verify_export(backend.base, 42, deep=True, filesystem=backend.new_fs())
    graph = next(f for f in info.files if f.path == "saved_model.pb")
    assert graph.size == len(b"graph 1")  # the first export, untouched


def test_unmarked_and_foreign_directories_are_not_exports(backend, source):
    fs = backend.fs
    write_object(fs, backend.strip(backend.join("123", "saved_model.pb")), b"foreign")
    write_object(fs, backend.strip(backend.join("notes.txt")), b"hello")
    assert ce.list_exports(backend.base, filesystem=fs) == []
    assert ce.latest_export(backend.base, filesystem=fs) is None
    with pytest.raises(ce.ExportNotFoundError, match="123"):
        ce.verify_export(backend.base, 123, filesystem=fs)
    with pytest.raises(ce.VersionConflictError):
        ce.publish(source, backend.base, version=123, filesystem=fs)


def test_fresh_listing_sees_changes_from_another_client(backend, source):
    reader = backend.new_fs()
    assert ce.list_exports(backend.base, filesystem=reader) == []
    reader.ls(backend.root) if reader.exists(backend.root) else None  # warm any listing cache
    first = ce.publish(source, backend.base, filesystem=backend.new_fs())
    assert [e.version for e in ce.list_exports(backend.base, filesystem=reader)] == [first.version]
    ce.prune(backend.base, keep=None, filesystem=reader)  # keeps all; warms caches again
    writer = backend.new_fs()
    writer.rm(backend.strip(first.uri), recursive=True)
    assert ce.list_exports(backend.base, filesystem=reader) == []
    assert ce.latest_export(backend.base, filesystem=reader) is None


def test_concurrent_publishers_in_threads_get_distinct_versions(backend, tmp_path):
    sources = [fake_saved_model(tmp_path / f"m{i}", seed=i) for i in range(6)]
    results: list[ce.ExportInfo] = []
    errors: list[BaseException] = []
    start = threading.Barrier(len(sources))

    def run(src: Path) -> None:
        start.wait()
        try:
            results.append(ce.publish(src, backend.base, filesystem=backend.new_fs()))
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(s,)) for s in sources]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    versions = sorted(r.version for r in results)
    assert len(set(versions)) == len(sources)
    for info in results:  # each version holds exactly its own model, byte for byte
        checked = ce.verify_export(backend.base, info.version, deep=True, filesystem=backend.fs)
        assert checked.files == info.files
    assert [e.version for e in ce.list_exports(backend.base, filesystem=backend.fs)] == versions


def test_corruption_is_detected(backend, source):
    info = ce.publish(source, backend.base, filesystem=backend.fs)
    shard = backend.strip(info.uri) + "/variables/variables.index"
    original = backend.fs.cat_file(shard)
    backend.fs.pipe_file(shard, b"X" * len(original))  # same size: only checksums see it
    ce.verify_export(backend.base, info.version, filesystem=backend.new_fs())
    with pytest.raises(ce.CorruptExportError, match="checksum"):
        ce.verify_export(backend.base, info.version, deep=True, filesystem=backend.new_fs())
    backend.fs.pipe_file(shard, b"short")
    with pytest.raises(ce.CorruptExportError, match=r"variables\.index"):
        ce.verify_export(backend.base, info.version, filesystem=backend.new_fs())
    backend.fs.pipe_file(backend.strip(info.uri) + "/surprise.txt", b"!")
    with pytest.raises(ce.CorruptExportError, match=r"unexpected surprise\.txt"):
        ce.verify_export(backend.base, info.version, filesystem=backend.new_fs())


def test_corrupt_marker_makes_export_invalid_not_a_crash(backend, source):
    good = ce.publish(source, backend.base, filesystem=backend.fs)
    bad = ce.publish(source, backend.base, filesystem=backend.fs)
    backend.fs.pipe_file(backend.strip(bad.uri) + "/" + MARKER_NAME, b'{"format": "nope"')
    fs = backend.new_fs()
    assert [e.version for e in ce.list_exports(backend.base, filesystem=fs)] == [good.version]
    assert ce.latest_export(backend.base, filesystem=fs).version == good.version
    with pytest.raises(ce.CorruptExportError, match="not valid JSON"):
        ce.verify_export(backend.base, bad.version, filesystem=fs)


@pytest.mark.parametrize("backend", ["memory", "s3", "gcs"], indirect=True)
def test_pruned_version_number_is_never_handed_out_again(backend, source, tmp_path, monkeypatch):
    """A publisher whose guess is a number that others committed and pruned meanwhile (a clock
    behind the others', or a walk past numbers taken) moves above every listed version.

    The other client publishes four exports with keep=3 just before this publisher's claim is
    created, so the guessed number was committed and deleted by then. (Local disk creates claims
    with O_EXCL outside fsspec, where this hook cannot interpose; the same code decides there.)
    """
    guess = int(time.time()) + 10_000  # ahead of every clock: all publishes here start from it
    monkeypatch.setattr(publish_module, "time", SimpleNamespace(time=lambda: float(guess)))
    other = fake_saved_model(tmp_path / "other", seed=2)

    def others_publish_and_prune() -> None:
        for _ in range(4):
            ce.publish(other, backend.base, keep=3, filesystem=backend.new_fs())

    assert ce.list_exports(backend.base, filesystem=backend.new_fs()) == []
    hook = run_before("pipe_file", f"{guess}.claim", others_publish_and_prune)
    mine = ce.publish(
        source, backend.base, filesystem=FaultyFileSystem(backend.new_fs(), fail_on=[hook])
    )
    assert mine.version == guess + 4  # not `guess`, committed and pruned before the claim
    listed = [e.version for e in ce.list_exports(backend.base, filesystem=backend.new_fs())]
    assert listed == [guess + 1, guess + 2, guess + 3, guess + 4]
    for version in listed:
        ce.verify_export(backend.base, version, deep=True, filesystem=backend.new_fs())


def test_a_claim_racing_another_on_s3_is_retried_and_yields(s3_backend, source):
    """Real S3 answers a conditional write that races another on the same key with 409
    ConditionalRequestConflict (moto cannot show it: it decides them one at a time). That is a
    retry, not a failed publish: the retry meets the other writer's claim and takes the next
    version, leaving the other's claim alone."""
    import botocore.exceptions
    from s3fs.errors import translate_boto_error

    from cloud_exporter.testing import FailOn

    backend, contested = s3_backend, []

    def first_claim(method: str, path: str) -> bool:
        if path.endswith(".claim") and not contested:
            contested.append(path)
        return bool(contested) and path == contested[0]

    def conflict() -> BaseException:
        write_object(backend.new_fs(), contested[0], b"the other writer")  # it won the race
        answer = {
            "Error": {"Code": "ConditionalRequestConflict", "Message": "A conflicting operation"},
            "ResponseMetadata": {"HTTPStatusCode": 409},
        }
        return translate_boto_error(botocore.exceptions.ClientError(answer, "PutObject"))

    rule = FailOn(method="pipe_file", predicate=first_claim, error=conflict)
    faulty = FaultyFileSystem(backend.new_fs(), fail_on=[rule])
    info = ce.publish(source, backend.base, filesystem=faulty)
    assert rule.fired == 1
    assert not contested[0].endswith(f"/{info.version}.claim")
    assert backend.new_fs().cat_file(contested[0]) == b"the other writer"
    verified = ce.verify_export(backend.base, info.version, deep=True, filesystem=backend.new_fs())
    assert verified.version == info.version


@pytest.mark.parametrize("mode", ["direct", "staged"])
def test_a_store_that_lets_two_writers_claim_one_version_loses_no_export(
    server_backend, source, mode, caplog
):
    """Should a store not keep a claim exclusive (stock moto under a race; an S3-compatible
    store that ignores If-None-Match), a second writer can commit the version while this
    publish places its files there. Its marker then fails: the abort must not delete the files
    the other writer's marker names (it once emptied such an export), and it says what broke."""
    from cloud_exporter.testing import FailOn
    from cloud_exporter.testing_faults import MUTATING_METHODS

    backend, placed = server_backend, []
    version_dir = backend.strip(backend.join("7")) + "/"

    def other_writer_commits_first(method: str, path: str) -> bool:
        if not placed and method in MUTATING_METHODS and path.startswith(version_dir):
            placed.append(path)
            fs = backend.new_fs()
            fs.rm_file(backend.strip(backend.join(STAGING_DIRNAME, "7.claim")))  # not exclusive
            ce.publish(source, backend.base, version=7, mode="direct", filesystem=fs)
        return False

    faulty = FaultyFileSystem(
        backend.new_fs(), fail_on=[FailOn(predicate=other_writer_commits_first, times=None)]
    )
    logs = caplog.at_level("WARNING", logger="cloud_exporter")
    with logs, pytest.raises(ce.VersionConflictError, match="7"):
        ce.publish(source, backend.base, version=7, mode=mode, filesystem=faulty)
    assert placed
    assert ce.verify_export(backend.base, 7, deep=True, filesystem=backend.new_fs()).version == 7
    assert any(
        "did not keep create-only writes exclusive" in r.getMessage() for r in caplog.records
    )
    staging = backend.strip(backend.join(STAGING_DIRNAME))
    assert not [p for p in backend.new_fs().find(staging) if "/7-" in p]  # our uploads went
