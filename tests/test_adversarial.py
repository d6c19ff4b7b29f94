"""Issue 11: the classes of defects an adversarial user found, tried on every backend.

Names with glob characters, a pruner whose clock is hours ahead, hostile markers, version
overflow, listings cached at any depth, deep verify racing a prune, and empty SavedModels.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from interleave import run_before
from savedmodels import fake_saved_model, tree, write_object

import cloud_exporter as ce
from cloud_exporter import retention
from cloud_exporter.layout import MARKER_NAME, STAGING_DIRNAME
from cloud_exporter.testing import FaultyFileSystem

# Every character class a bucket allows that fsspec may read as a pattern or URL syntax.
HOSTILE_NAMES = ["exp[1]", "exp?1", "exp*", "a b#c%41", "ünï-çødé"]
HOSTILE_FILES = ["assets/vocab[en].txt", "assets/what?.txt", "assets/star*.txt", "assets/x #%20y"]


@pytest.fixture
def source(tmp_path: Path) -> Path:
    return fake_saved_model(tmp_path / "model", seed=1)


@pytest.fixture(
    params=[
        "memory",
        pytest.param("s3", marks=pytest.mark.servers),
        pytest.param("gcs", marks=pytest.mark.servers),
    ]
)
def object_store(request):
    """The backends that publish through the object-store strategies (not the local rename)."""
    from conftest import _backend_for

    with _backend_for(request, request.param) as value:
        yield value


def _so(backend):
    return backend.storage_options


def _objects(backend, uri: str) -> set[str]:
    fs = backend.new_fs()
    root = backend.strip(uri).rstrip("/")
    try:
        found = fs.find(root)
    except FileNotFoundError:
        return set()
    return {p[len(root) + 1 :] for p in found}


# ---------------------------------------------------------------------------------------------
# 1. Names are literal, in every call
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_prune_of_a_glob_named_base_touches_only_that_base(backend, source, name):
    scratch = backend.scratch.rstrip("/")
    hostile, plain = f"{scratch}/models/{name}", f"{scratch}/models/exp1"
    for base in (hostile, plain):
        for _ in range(2):
            ce.publish(source, base, storage_options=_so(backend))
    plain_before = [e.version for e in ce.list_exports(plain, storage_options=_so(backend))]

    report = ce.prune(hostile, keep=1, storage_options=_so(backend))

    assert len(report.deleted) == 1
    assert len(ce.list_exports(hostile, storage_options=_so(backend))) == 1
    assert [e.version for e in ce.list_exports(plain, storage_options=_so(backend))] == plain_before
    for version in plain_before:
        ce.verify_export(plain, version, deep=True, storage_options=_so(backend))
    assert not any(p.startswith(STAGING_DIRNAME + "/") for p in _objects(backend, hostile))


@pytest.mark.parametrize("mode", ["staged", "direct"])
def test_glob_named_files_publish_verify_and_leave_no_staging(backend, source, tmp_path, mode):
    for rel in HOSTILE_FILES:
        (source / rel).write_bytes(rel.encode())
    base = backend.join("m[0]")
    info = ce.publish(source, base, mode=mode, storage_options=_so(backend))
    assert {f.path for f in info.files} == set(tree(source))
    ce.verify_export(base, info.version, deep=True, storage_options=_so(backend))
    listed = _objects(backend, base)
    assert {p for p in listed if p.startswith(STAGING_DIRNAME)} == set()
    assert {p.split("/", 1)[1] for p in listed} == set(tree(source)) | {MARKER_NAME}
    ce.publish(source, base, storage_options=_so(backend))
    ce.prune(base, keep=1, storage_options=_so(backend))
    assert len(ce.list_exports(base, storage_options=_so(backend))) == 1


# ---------------------------------------------------------------------------------------------
# 2. Clocks of other machines
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("skew_hours", [3, -3])
def test_pruner_with_a_skewed_clock_spares_a_publish_in_flight(
    backend, source, monkeypatch, skew_hours
):
    """A prune runs between the publisher's last copy and its marker, on a machine whose clock is
    hours off. Ages come from the store's clock, so nothing in flight is old: the publish commits
    a complete export."""
    real_time = time.time

    def pruner_runs() -> None:
        monkeypatch.setattr(retention.time, "time", lambda: real_time() + skew_hours * 3600)
        try:
            report = ce.prune(backend.base, keep=None, filesystem=backend.new_fs())
        finally:
            monkeypatch.setattr(retention.time, "time", real_time)
        assert report.orphans_removed == []

    marker_hook = run_before("pipe_file", MARKER_NAME, pruner_runs)
    if backend.name == "local":  # the build happens outside fsspec: run it at the claim listing
        marker_hook = run_before("ls", backend.root, pruner_runs)
    info = ce.publish(
        source, backend.base, filesystem=FaultyFileSystem(backend.new_fs(), fail_on=[marker_hook])
    )
    ce.verify_export(backend.base, info.version, deep=True, filesystem=backend.new_fs())


def test_publish_never_reports_success_for_files_deleted_before_its_marker(object_store, source):
    """Whatever deletes a version's files in the window between the pre-commit check and the
    marker write, publish raises and no export is visible. (Local disk renames the complete
    version, marker inside: it has no such window.)"""
    backend = object_store
    fs = backend.new_fs()

    def someone_deletes() -> None:
        vdir = [p for p in fs.find(backend.root) if p.endswith("variables.index")]
        vdir = [p for p in vdir if STAGING_DIRNAME not in p]
        fs.rm_file(vdir[0])

    hook = run_before("pipe_file", MARKER_NAME, someone_deletes)
    with pytest.raises(ce.CorruptExportError):
        ce.publish(
            source, backend.base, filesystem=FaultyFileSystem(backend.new_fs(), fail_on=[hook])
        )
    assert ce.list_exports(backend.base, filesystem=backend.new_fs()) == []


def test_orphans_age_by_the_store_clock(backend, source, monkeypatch):
    """A crashed publish's leftovers are removed once old by the store's clock, whatever the
    pruner's clock says: hours ahead removes nothing new; hours behind still removes old ones."""
    fs = backend.new_fs()
    leftover = backend.strip(backend.join(STAGING_DIRNAME, "5-wdead", "saved_model.pb"))
    write_object(fs, leftover, b"graph")
    real_time = time.time
    monkeypatch.setattr(retention.time, "time", lambda: real_time() + 10 * 3600)
    report = ce.prune(backend.base, keep=None, grace_seconds=60, filesystem=backend.new_fs())
    assert report.orphans_removed == [] and len(report.orphans_waiting) == 1
    monkeypatch.setattr(retention.time, "time", lambda: real_time() - 10 * 3600)
    report = ce.prune(backend.base, keep=None, grace_seconds=0, filesystem=backend.new_fs())
    assert len(report.orphans_removed) == 1
    assert not fs.exists(leftover)


# ---------------------------------------------------------------------------------------------
# 3. Hostile markers
# ---------------------------------------------------------------------------------------------
HOSTILE_MARKERS = {
    "nested-list": b"[" * 100_000,
    "nested-object": b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
    "truncated": b'{"format": "cloud-exporter-marker", "files": [',
    "empty": b"",
    "not-utf8": b"\xff\xfe{}",
}


def _deep_metadata_marker(depth: int) -> bytes:
    meta: object = 1
    for _ in range(depth):
        meta = {"k": meta}
    doc = {
        "format": "cloud-exporter-marker",
        "format_version": 1,
        "version": 7,
        "created": 1.0,
        "writer_id": "w",
        "library_version": "0",
        "metadata": meta,
        "files": [{"path": "saved_model.pb", "size": 1, "sha256": "0" * 64}],
    }
    return json.dumps(doc).encode()


HOSTILE_MARKERS["deep-metadata"] = _deep_metadata_marker(900)


@pytest.mark.parametrize("kind", sorted(HOSTILE_MARKERS))
def test_a_hostile_marker_is_skipped_by_readers_and_fails_verify(backend, source, kind):
    good = ce.publish(source, backend.base, storage_options=_so(backend))
    fs = backend.new_fs()
    write_object(fs, backend.strip(backend.join("7", "saved_model.pb")), b"x")
    write_object(fs, backend.strip(backend.join("7", MARKER_NAME)), HOSTILE_MARKERS[kind])

    assert [e.version for e in ce.list_exports(backend.base, filesystem=fs)] == [good.version]
    assert ce.latest_export(backend.base, filesystem=fs).version == good.version
    with pytest.raises(ce.CorruptExportError):
        ce.verify_export(backend.base, 7, deep=True, filesystem=fs)
    report = ce.prune(backend.base, keep=1, filesystem=fs)
    assert 7 in report.skipped and report.deleted == []


def test_a_hostile_prune_journal_is_ignored(backend, source):
    ce.publish(source, backend.base, storage_options=_so(backend))
    fs = backend.new_fs()
    journal = backend.strip(backend.join(STAGING_DIRNAME, "prune-1-abcdef012345.json"))
    write_object(fs, journal, b"[" * 100_000)
    report = ce.prune(backend.base, keep=1, filesystem=fs)
    assert report.deleted == []


# ---------------------------------------------------------------------------------------------
# 4. Versions stay within int64 (TF Serving) and visible
# ---------------------------------------------------------------------------------------------
INT64_MAX = 2**63 - 1


def test_explicit_versions_that_would_hide_the_next_one_are_refused(backend, source):
    for bad in (10**19 - 1, INT64_MAX, INT64_MAX + 1):
        with pytest.raises(ce.InvalidArgumentError, match="int64"):
            ce.publish(source, backend.base, version=bad, storage_options=_so(backend))
    top = ce.publish(source, backend.base, version=INT64_MAX - 1, storage_options=_so(backend))
    nxt = ce.publish(source, backend.base, storage_options=_so(backend))
    assert nxt.version == INT64_MAX
    assert [e.version for e in ce.list_exports(backend.base, storage_options=_so(backend))] == [
        top.version,
        nxt.version,
    ]
    with pytest.raises(ce.VersionConflictError, match="int64"):
        ce.publish(source, backend.base, storage_options=_so(backend))
    assert [e.version for e in ce.list_exports(backend.base, storage_options=_so(backend))] == [
        top.version,
        nxt.version,
    ]


def test_a_foreign_directory_beyond_int64_is_not_a_version(backend, source):
    fs = backend.new_fs()
    write_object(fs, backend.strip(backend.join(str(10**19 - 1), "saved_model.pb")), b"x")
    write_object(fs, backend.strip(backend.join("0042", "saved_model.pb")), b"x")
    info = ce.publish(source, backend.base, storage_options=_so(backend))
    assert info.version < INT64_MAX
    assert [e.version for e in ce.list_exports(backend.base, storage_options=_so(backend))] == [
        info.version
    ]
    assert ce.latest_export(backend.base, storage_options=_so(backend)).version == info.version
    ce.prune(backend.base, keep=1, grace_seconds=0, storage_options=_so(backend))
    assert fs.exists(backend.strip(backend.join("0042", "saved_model.pb")))


# ---------------------------------------------------------------------------------------------
# 5. No read rests on a cached listing of any depth
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shared", ["instance", "storage_options"])
def test_a_long_lived_reader_sees_an_export_finished_after_its_listing(
    server_backend, source, shared
):
    backend = server_backend  # local and memory filesystems keep no listings cache
    reader = backend.new_fs()
    kwargs = {"filesystem": reader} if shared == "instance" else {"storage_options": _so(backend)}

    seen: list[list[int]] = []

    def reader_looks() -> None:
        # The reader lists while the version directory is half copied (deep listing cached).
        seen.append([e.version for e in ce.list_exports(backend.base, **kwargs)])

    # Copies go largest first: the variables shard is in place, its index not yet.
    hook = run_before("cp_file", "variables/variables.index", reader_looks)
    writer = FaultyFileSystem(backend.new_fs(), fail_on=[hook])
    info = ce.publish(source, backend.base, filesystem=writer)
    assert seen == [[]]
    assert ce.verify_export(backend.base, info.version, deep=True, **kwargs).files == info.files
    assert [e.version for e in ce.list_exports(backend.base, **kwargs)] == [info.version]


# ---------------------------------------------------------------------------------------------
# 6. Every error that leaves the library is typed
# ---------------------------------------------------------------------------------------------
def test_deep_verify_racing_a_prune_raises_export_not_found(backend, source):
    first = ce.publish(source, backend.base, storage_options=_so(backend))
    ce.publish(source, backend.base, storage_options=_so(backend))

    def prune_first() -> None:
        ce.prune(backend.base, keep=1, filesystem=backend.new_fs())

    hook = run_before("open", "variables.index", prune_first)
    fs = FaultyFileSystem(backend.new_fs(), fail_on=[hook])
    with pytest.raises(ce.ExportNotFoundError, match=str(first.version)):
        ce.verify_export(backend.base, first.version, deep=True, download=True, filesystem=fs)


def test_verify_racing_a_prune_between_marker_and_listing(backend, source):
    first = ce.publish(source, backend.base, storage_options=_so(backend))
    ce.publish(source, backend.base, storage_options=_so(backend))

    def prune_first() -> None:
        ce.prune(backend.base, keep=1, filesystem=backend.new_fs())

    hook = run_before("find", f"/{first.version}", prune_first)
    fs = FaultyFileSystem(backend.new_fs(), fail_on=[hook])
    with pytest.raises(ce.ExportNotFoundError):
        ce.verify_export(backend.base, first.version, filesystem=fs)


# ---------------------------------------------------------------------------------------------
# 7. An empty saved_model.pb is not a SavedModel
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["saved_model.pb", "saved_model.pbtxt"])
def test_an_empty_saved_model_is_refused_before_anything_is_written(backend, tmp_path, name):
    src = fake_saved_model(tmp_path / "m")
    (src / "saved_model.pb").unlink()
    (src / name).write_bytes(b"")
    with pytest.raises(ce.InvalidSourceError, match="empty"):
        ce.publish(src, backend.base, storage_options=_so(backend))
    assert _objects(backend, backend.base) == set()
