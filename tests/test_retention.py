"""prune: policies, orphans, dry runs and concurrent prunes, on every backend."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
from interleave import run_before
from savedmodels import fake_saved_model, write_object

import cloud_exporter as ce
from cloud_exporter.layout import MARKER_NAME, STAGING_DIRNAME
from cloud_exporter.marker import ExportInfo, FileRecord
from cloud_exporter.policies import KeepBest, KeepEveryHours
from cloud_exporter.retention import UNMARKED_REASON
from cloud_exporter.storage import CLOCK_PROBE_PREFIX
from cloud_exporter.testing import FaultyFileSystem


@pytest.fixture
def source(tmp_path: Path) -> Path:
    return fake_saved_model(tmp_path / "model", seed=3)


def versions(backend) -> list[int]:
    return [e.version for e in ce.list_exports(backend.base, filesystem=backend.new_fs())]


def all_objects(backend) -> list[str]:
    fs = backend.new_fs()
    return sorted(fs.find(backend.root)) if fs.exists(backend.root) else []


def publish_many(backend, source, count, metadata=lambda v: {}) -> list[int]:
    return [
        ce.publish(
            source, backend.base, version=v, metadata=metadata(v), filesystem=backend.fs
        ).version
        for v in range(1, count + 1)
    ]


def test_keep_newest_n_of_twenty(backend, source):
    publish_many(backend, source, 20)
    report = ce.prune(backend.base, keep=5, filesystem=backend.fs)
    assert report.deleted == list(range(1, 16))
    assert sorted(report.kept) == list(range(16, 21))
    assert versions(backend) == list(range(16, 21))
    for v in range(16, 21):
        ce.verify_export(backend.base, v, filesystem=backend.fs)
    leftovers = [p for p in all_objects(backend) if "/" + STAGING_DIRNAME + "/" not in p]
    assert all(int(p[len(backend.root) + 1 :].split("/")[0]) >= 16 for p in leftovers)


def test_policies_union_with_pinned_and_best(backend, source):
    losses = {1: 0.1, 2: 0.9, 3: 0.5, 4: 0.05, 5: 0.7, 6: 0.8, 7: 0.6, 8: 0.95}
    publish_many(backend, source, 8, metadata=lambda v: {"metrics": {"loss": losses[v]}})
    report = ce.prune(
        backend.base, keep=2, keep_best=("loss", "min", 2), pinned=[3], filesystem=backend.fs
    )
    assert versions(backend) == [1, 3, 4, 7, 8]
    assert report.kept[3] == ["pinned"]
    assert report.kept[4] == ["best 2 by loss (min)"]
    assert report.kept[8] == ["newest 2"]
    assert report.deleted == [2, 5, 6]


def test_keep_none_keeps_everything_and_publish_keep_prunes(backend, source):
    publish_many(backend, source, 4)
    assert ce.prune(backend.base, keep=None, filesystem=backend.fs).deleted == []
    assert versions(backend) == [1, 2, 3, 4]
    info = ce.publish(source, backend.base, keep=2, filesystem=backend.fs)
    assert versions(backend) == [4, info.version]


@pytest.mark.parametrize("keep", [0, -1, 1.5, "3", True])
def test_invalid_keep_is_a_value_error(keep, tmp_path, source):
    with pytest.raises(ValueError, match="keep"):
        ce.prune(str(tmp_path / "base"), keep=keep)
    with pytest.raises(ce.InvalidArgumentError, match="keep"):
        ce.publish(source, str(tmp_path / "base"), keep=keep)
    assert not (tmp_path / "base").exists()


def test_dry_run_reports_exactly_and_mutates_nothing(backend, source):
    publish_many(backend, source, 6)
    before = all_objects(backend)
    planned = ce.prune(backend.base, keep=2, grace_seconds=0, dry_run=True, filesystem=backend.fs)
    assert all_objects(backend) == before
    done = ce.prune(backend.base, keep=2, grace_seconds=0, filesystem=backend.fs)
    assert planned.deleted == done.deleted == [1, 2, 3, 4]
    assert planned.orphans_removed == done.orphans_removed
    assert planned.dry_run and not done.dry_run


def _crash_leftovers(backend, version: int) -> None:
    """What a publish that died after its claim and part of its copy leaves behind."""
    fs = backend.fs
    staging = backend.strip(backend.join(STAGING_DIRNAME))
    write_object(fs, f"{staging}/{version}.claim", b"w1-dead")
    write_object(fs, f"{staging}/{version}-w1-dead/variables/variables.index", b"i")
    write_object(fs, f"{staging}/{version}-w1-dead/saved_model.pb", b"g")
    write_object(fs, backend.strip(backend.join(str(version), "variables/variables.index")), b"i")


def test_orphans_removed_only_after_grace(backend, source):
    publish_many(backend, source, 2)
    _crash_leftovers(backend, 9)
    write_object(backend.fs, backend.strip(backend.join("temp-1700000000", "saved_model.pb")), b"t")
    write_object(backend.fs, backend.strip(backend.join("77", "saved_model.pb")), b"foreign")
    young = ce.prune(backend.base, keep=5, grace_seconds=3600, filesystem=backend.fs)
    assert young.orphans_removed == []
    assert len(young.orphans_waiting) == 2
    assert young.skipped == {77: UNMARKED_REASON}
    old = ce.prune(backend.base, keep=5, grace_seconds=0, filesystem=backend.fs)
    assert sorted(old.orphans_removed) == sorted(young.orphans_waiting)
    remaining = [p[len(backend.root) + 1 :] for p in all_objects(backend)]
    assert [p for p in remaining if not p.startswith(("1/", "2/"))] == ["77/saved_model.pb"]
    assert versions(backend) == [1, 2]
    # The claim is gone, so version 9 can be published again.
    assert ce.publish(source, backend.base, version=9, filesystem=backend.fs).version == 9


def test_policy_values_on_synthetic_exports():
    def export(version: int, hours: float, loss: float | None) -> ExportInfo:
        meta = {} if loss is None else {"loss": loss}
        files = (FileRecord("saved_model.pb", 1, "0" * 64),)
        return ExportInfo(
            version, f"memory://b/{version}", 1_700_000_000 + hours * 3600, files, meta
        )

    exports = [export(1, 0.0, 3), export(2, 0.5, None), export(3, 1.2, 1), export(4, 2.9, 2)]
    assert set(KeepEveryHours(1).select(exports)) == {1, 3, 4}
    assert set(KeepEveryHours(2).select(exports)) == {1, 4}
    assert set(KeepBest("loss", "max", 2).select(exports)) == {1, 4}
    with pytest.raises(ValueError):
        KeepBest("loss", "median", 1)


@pytest.mark.parametrize("name", ["s3", "gcs"])
def test_concurrent_prunes_and_publisher(request, name, tmp_path):
    backend = request.getfixturevalue(f"{name}_backend")
    sources = [fake_saved_model(tmp_path / f"m{i}", seed=i) for i in range(8)]
    published: list[int] = []
    errors: list[BaseException] = []
    done = threading.Event()

    def publisher() -> None:
        try:
            for src in sources:
                published.append(ce.publish(src, backend.base, filesystem=backend.new_fs()).version)
        except BaseException as exc:
            errors.append(exc)
        finally:
            done.set()

    def pruner() -> None:
        fs = backend.new_fs()
        try:
            while not done.is_set():
                ce.prune(backend.base, keep=3, grace_seconds=3600, filesystem=fs)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=publisher)] + [threading.Thread(target=pruner) for _ in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    ce.prune(backend.base, keep=3, filesystem=backend.fs)
    assert versions(backend) == sorted(published)[-3:]
    for v in sorted(published)[-3:]:
        ce.verify_export(backend.base, v, deep=True, filesystem=backend.fs)
    marker_dirs = [p for p in all_objects(backend) if p.endswith(MARKER_NAME)]
    assert len(marker_dirs) == 3


def test_second_delete_pass_spares_a_version_being_published_again(backend, source):
    """prune lists again after its deletes, to catch objects a lagging listing hid. A publisher
    that re-publishes a doomed number (explicit versions may reuse a deleted one) between the
    two listings has a claim there: its new files must survive the second pass."""
    publish_many(backend, source, 4)
    claim = backend.strip(backend.join(STAGING_DIRNAME, "1.claim"))
    fresh = backend.strip(backend.join("1", "variables", "variables.index"))

    def republish_version_1() -> None:  # a publisher in flight: its claim, then a first copy
        fs = backend.new_fs()
        write_object(fs, claim, b"w-other")
        write_object(fs, fresh, b"new shard")

    hook = run_before("find", backend.root, republish_version_1, nth=2)
    report = ce.prune(
        backend.base, keep=3, filesystem=FaultyFileSystem(backend.new_fs(), fail_on=[hook])
    )
    assert report.deleted == [1]
    fs = backend.new_fs()
    assert fs.cat_file(fresh) == b"new shard" and fs.cat_file(claim) == b"w-other"
    assert versions(backend) == [2, 3, 4]
    report = ce.prune(backend.base, keep=3, filesystem=backend.new_fs())  # default grace
    assert fs.cat_file(fresh) == b"new shard"
    assert [name.rsplit("/", 1)[-1] for name in report.orphans_waiting] == ["1"]  # in flight


def test_a_clean_prune_leaves_nothing_for_the_next_to_report(backend, source):
    """A finished prune removes its own journal and clock probe: the next prune, dry or real,
    reports no orphan (a journal it finds always means a prune stopped half way)."""
    publish_many(backend, source, 3)
    first = ce.prune(backend.base, keep=1, grace_seconds=0, storage_options=backend.storage_options)
    assert len(first.deleted) == 2
    assert not [p for p in all_objects(backend) if STAGING_DIRNAME in p]
    for dry_run in (True, False):
        again = ce.prune(
            backend.base, keep=1, dry_run=dry_run, storage_options=backend.storage_options
        )
        assert (again.deleted, again.orphans_removed, again.orphans_waiting) == ([], [], [])


def test_a_journal_its_prune_removed_after_the_listing_is_not_reported(backend, source, caplog):
    """Another prune finishes, deleting its journal, between this prune's listing and its read
    of that journal: nothing to say about it. A journal with bad content is still reported."""
    publish_many(backend, source, 2)
    staging = backend.strip(backend.join(STAGING_DIRNAME))
    finished, broken = f"{staging}/prune-1-ab.json", f"{staging}/prune-2-cd.json"
    journal = b'{"format": "cloud-exporter-prune-journal", "versions": []}'
    write_object(backend.fs, finished, journal)
    write_object(backend.fs, broken, b'{"format": ')
    hook = run_before("cat_file", "prune-1-ab.json", lambda: backend.new_fs().rm_file(finished))
    faulty = FaultyFileSystem(backend.new_fs(), fail_on=[hook])
    with caplog.at_level("WARNING", logger="cloud_exporter"):
        ce.prune(backend.base, keep=5, filesystem=faulty)
    warnings = [r.getMessage() for r in caplog.records if "journal" in r.getMessage()]
    assert len(warnings) == 1 and "prune-2-cd.json" in warnings[0], warnings


def _probes(faulty: FaultyFileSystem) -> set[str]:
    """The clock probe objects the calls through ``faulty`` wrote (and removed)."""
    return {path for _, path in faulty.mutations() if CLOCK_PROBE_PREFIX in path}


def test_publish_keep_takes_the_store_clock_from_its_own_marker(backend, source):
    """publish(keep=) hands its storage and the new export to the prune: the marker's listed
    time is the store's clock, so no probe object is written; a plain prune still writes one."""
    publish_many(backend, source, 2)
    _crash_leftovers(backend, 9)  # young orphans: the prune must read a clock to age them
    faulty = FaultyFileSystem(backend.fs)
    info = ce.publish(source, backend.base, keep=2, filesystem=faulty)
    assert _probes(faulty) == set()
    assert versions(backend) == [2, info.version]
    assert any("9.claim" in p for p in all_objects(backend))  # young: waits out its grace
    faulty.reset_counters()
    report = ce.prune(backend.base, keep=2, filesystem=faulty)
    assert len(_probes(faulty)) == 1 and report.orphans_waiting


def test_the_committed_marker_time_still_ages_old_orphans(tmp_path, source):
    """Local disk, where mtimes can be set: leftovers two hours old are removed by
    publish(keep=), whose clock is the time of the marker it just wrote."""
    base = tmp_path / "base"
    ce.publish(source, str(base), version=1)
    staging = base / STAGING_DIRNAME
    (staging / "9-w1-dead").mkdir(parents=True)
    for path in (staging / "9.claim", staging / "9-w1-dead" / "saved_model.pb"):
        path.write_bytes(b"x")
        os.utime(path, (time.time() - 7200, time.time() - 7200))
    info = ce.publish(source, str(base), keep=1)
    assert sorted(p.name for p in base.iterdir()) == [str(info.version)]


def test_prune_ignores_committed_from_another_base(backend, source):
    """An ExportInfo of another base is no clock for this one: the prune probes as usual."""
    publish_many(backend, source, 1)
    elsewhere = f"{backend.scratch.rstrip('/')}/elsewhere"
    other = ce.publish(source, elsewhere, version=5, filesystem=backend.fs)
    _crash_leftovers(backend, 9)
    faulty = FaultyFileSystem(backend.fs)
    ce.prune(backend.base, keep=2, committed=other, filesystem=faulty)
    assert len(_probes(faulty)) == 1


def test_stock_collection_spares_a_direct_publish_in_flight(backend):
    """A direct publish's version dir looks like a complete stock export until its marker
    lands; while its claim exists the estimator's stock clean-up must not delete it."""
    from cloud_exporter._stock_compat import collect_stock_exports
    from cloud_exporter.storage import Storage, resolve

    fs = backend.fs
    for version in (1700000001, 1700000002, 1700000003):
        write_object(fs, backend.strip(backend.join(str(version), "saved_model.pb")), b"g")
    write_object(fs, backend.strip(backend.join(STAGING_DIRNAME, "1700000001.claim")), b"w1")
    fs.invalidate_cache()
    resolved, root = resolve(backend.base, fs, None)
    deleted = collect_stock_exports(Storage(resolved), root, 1, [], "test")
    assert deleted == [1700000002]
    left = {p[len(backend.root) + 1 :].split("/")[0] for p in all_objects(backend)}
    assert left == {"1700000001", "1700000003", STAGING_DIRNAME}
