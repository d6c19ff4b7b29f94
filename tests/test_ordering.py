"""Order of writes and deletes as recorded on each backend, stale listings, transient deletes."""

from __future__ import annotations

from pathlib import Path

import pytest
from savedmodels import fake_saved_model

import cloud_exporter as ce
from cloud_exporter.layout import MARKER_NAME, STAGING_DIRNAME
from cloud_exporter.testing import FailOn, FaultyFileSystem

FAST = ce.RetryPolicy(max_attempts=8, initial_wait=0.001, max_wait=0.01)


@pytest.fixture
def source(tmp_path: Path) -> Path:
    return fake_saved_model(tmp_path / "model", seed=9)


def into_version(mutations: list[tuple[str, str]], version_dir: str) -> list[str]:
    """Names of objects written into the version directory, in order."""
    return [p[len(version_dir) + 1 :] for _, p in mutations if p.startswith(version_dir + "/")]


@pytest.mark.parametrize("mode", ["staged", "direct"])
def test_saved_model_pb_lands_after_every_other_file_and_marker_last(backend, source, mode):
    fs = FaultyFileSystem(backend.new_fs())
    info = ce.publish(source, backend.base, mode=mode, filesystem=fs)
    vdir = backend.strip(info.uri)
    mutations = fs.mutations()
    if backend.name == "local":  # built in staging, renamed whole: nothing lands one by one
        assert into_version(mutations, vdir) == []
        staged = [p for _, p in mutations if f"/{STAGING_DIRNAME}/" in p]
        assert staged and all(p.endswith(".claim") for p in staged)
        return
    written = into_version(mutations, vdir)
    assert written[-1] == MARKER_NAME
    assert written[-2] == "saved_model.pb"
    assert sorted(written[:-2]) == sorted(f.path for f in info.files if f.path != "saved_model.pb")
    if mode == "staged":  # every byte went through staging first
        methods = {
            m for m, p in mutations if p.startswith(vdir + "/") and p != f"{vdir}/{MARKER_NAME}"
        }
        assert methods == {"cp_file"}


def test_prune_deletes_marker_then_saved_model_then_the_rest(backend, source):
    for v in (1, 2, 3):
        ce.publish(source, backend.base, version=v, filesystem=backend.fs)
    fs = FaultyFileSystem(backend.new_fs())
    ce.prune(backend.base, keep=1, filesystem=fs)
    deletes = [p for m, p in fs.mutations() if m in ("rm", "rm_file", "_rm")]
    for v in (1, 2):
        vdir = backend.strip(backend.join(str(v)))
        mine = [p[len(vdir) + 1 :] for p in deletes if p.startswith(vdir + "/")]
        assert mine[0] == MARKER_NAME
        assert mine[1] == "saved_model.pb"
        assert set(mine[2:]) >= {"variables/variables.index", "assets/vocab.txt"}
    assert not any(p.startswith(backend.strip(backend.join("3"))) for p in deletes)
    # Batched: one request per phase for all doomed exports (markers, graphs, the rest).
    assert len([c for c in fs.calls if c.method == "rm" and c.mutating]) == 3


def test_prune_with_stale_listings_converges_and_keeps_newest(backend, source):
    fs = FaultyFileSystem(backend.new_fs(), stale_calls=3)
    published = [ce.publish(source, backend.base, filesystem=fs).version for _ in range(5)]
    # Listings lag: the newest exports may be invisible, deleted ones still shown.
    for _ in range(4):
        ce.prune(backend.base, keep=2, filesystem=fs, retry=FAST)
        assert set(published[-2:]) <= {
            e.version for e in ce.list_exports(backend.base, filesystem=backend.new_fs())
        }
    remaining = [e.version for e in ce.list_exports(backend.base, filesystem=backend.new_fs())]
    assert remaining == published[-2:]
    for v in remaining:
        ce.verify_export(backend.base, v, deep=True, filesystem=backend.new_fs())


def test_transient_delete_failures_are_retried_and_nothing_extra_goes(backend, source):
    for v in range(1, 7):
        ce.publish(source, backend.base, version=v, filesystem=backend.fs)
    fs = FaultyFileSystem(
        backend.new_fs(),
        seed=4,
        transient_rate={"rm": 0.5, "rm_file": 0.5},
        fail_after_mutation_rate=0.5,
    )
    report = ce.prune(backend.base, keep=3, filesystem=fs, retry=FAST)
    assert report.deleted == [1, 2, 3]
    assert any(c.outcome == "transient" for c in fs.calls)
    assert [e.version for e in ce.list_exports(backend.base, filesystem=backend.new_fs())] == [
        4,
        5,
        6,
    ]
    for v in (4, 5, 6):
        ce.verify_export(backend.base, v, deep=True, filesystem=backend.new_fs())


def test_prune_that_cannot_finish_raises_typed_error_and_rerun_finishes(backend, source):
    for v in range(1, 5):
        ce.publish(source, backend.base, version=v, filesystem=backend.fs)

    def graph_delete(method: str, path: str) -> bool:
        return path.endswith("saved_model.pb")

    # Markers go, then every attempt to delete saved_model.pb fails: the prune stops half way.
    broken = FaultyFileSystem(
        backend.new_fs(), fail_on=[FailOn(method="rm", predicate=graph_delete, times=None)]
    )
    with pytest.raises(ce.PruneIncompleteError, match="run prune again") as raised:
        ce.prune(
            backend.base,
            keep=2,
            filesystem=broken,
            retry=ce.RetryPolicy(max_attempts=2, initial_wait=0.001),
        )
    assert raised.value.report.remaining  # says what is left
    assert [e.version for e in ce.list_exports(backend.base, filesystem=backend.new_fs())] == [3, 4]
    rerun = ce.prune(backend.base, keep=2, filesystem=backend.new_fs())
    assert sorted(rerun.orphans_removed)[:2] == [
        backend.new_fs().unstrip_protocol(backend.strip(backend.join(str(v)))) for v in (1, 2)
    ]
    leftover = [p for p in backend.new_fs().find(backend.root) if "/1/" in p or "/2/" in p]
    assert leftover == []
    # The third run removes the finished prune journals: only the two exports remain.
    ce.prune(backend.base, keep=2, filesystem=backend.new_fs())
    names = {p[len(backend.root) + 1 :].split("/")[0] for p in backend.new_fs().find(backend.root)}
    assert names == {"3", "4"}
