"""adopt_exports / ``cloud-exporter adopt``: commit unmarked version directories on every store."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from savedmodels import fake_saved_model, tree, write_object
from test_cli import cli, options

from cloud_exporter import latest_export, list_exports, prune, publish, verify_export
from cloud_exporter.adopt import adopt, adopt_exports

STOCK = 1700000000  # a 10-digit, stock-style version name


def put_tree(backend, local: Path, version_name: str, skip: tuple[str, ...] = ()) -> None:
    for relpath, data in tree(local).items():
        if relpath not in skip:
            write_object(backend.fs, f"{backend.root}/{version_name}/{relpath}", data)


@pytest.fixture
def model(tmp_path: Path) -> Path:
    root = fake_saved_model(tmp_path / "model", seed=3)
    (root / "assets" / "we ird [1]*?.txt").write_bytes("ünïcode".encode())
    return root


def test_adopts_complete_dirs_and_refuses_partial_ones(backend, model: Path) -> None:
    put_tree(backend, model, str(STOCK))
    put_tree(backend, model, "42")  # copied by another tool: not stock-named, still a version
    put_tree(backend, model, str(STOCK + 1), skip=("variables/variables.index",))
    put_tree(backend, model, str(STOCK + 2), skip=("saved_model.pb",))
    write_object(backend.fs, f"{backend.root}/{STOCK + 3}/saved_model.pb", b"")
    shard = "variables/variables.data-00000-of-00002"  # one of two shards
    write_object(backend.fs, f"{backend.root}/{STOCK + 4}/{shard}", b"x")
    write_object(backend.fs, f"{backend.root}/{STOCK + 4}/variables/variables.index", b"i")
    write_object(backend.fs, f"{backend.root}/{STOCK + 4}/saved_model.pb", b"g")
    put_tree(backend, model, "temp-1700000009")  # a stock export in flight: not a version
    ours = publish(str(model), backend.base, storage_options=backend.storage_options)

    report = adopt(backend.base, storage_options=backend.storage_options)

    assert [i.version for i in report.adopted] == [42, STOCK]
    assert set(report.refused) == {STOCK + 1, STOCK + 2, STOCK + 3, STOCK + 4}
    assert "variables.index is missing" in report.refused[STOCK + 1]
    assert "no saved_model.pb" in report.refused[STOCK + 2]
    assert "empty" in report.refused[STOCK + 3]
    assert "[1] of 2 missing" in report.refused[STOCK + 4]
    exports = list_exports(backend.base, storage_options=backend.storage_options)
    assert [e.version for e in exports] == [42, STOCK, ours.version]
    for export in exports[:2]:
        verify_export(
            backend.base, export.version, deep=True, storage_options=backend.storage_options
        )
        assert {f.path for f in export.files} == set(tree(model))
    kinds = [e.metadata["adopted"]["kind"] for e in exports[:2]]
    assert kinds == ["unmarked", "stock-estimator"]
    assert "adopted" not in exports[2].metadata

    again = adopt(backend.base, storage_options=backend.storage_options)  # safe twice
    assert again.adopted == [] and set(again.refused) == set(report.refused)
    assert backend.fs.exists(f"{backend.root}/temp-1700000009/saved_model.pb")

    prune(backend.base, keep=1, storage_options=backend.storage_options)  # like any export
    assert [
        e.version for e in list_exports(backend.base, storage_options=backend.storage_options)
    ] == [ours.version]


def test_dry_run_writes_nothing(backend, model: Path) -> None:
    put_tree(backend, model, str(STOCK))
    before = sorted(backend.new_fs().find(backend.root))
    would = adopt_exports(backend.base, dry_run=True, storage_options=backend.storage_options)
    assert [i.version for i in would] == [STOCK]
    assert sorted(backend.new_fs().find(backend.root)) == before
    assert latest_export(backend.base, storage_options=backend.storage_options) is None


def test_a_version_being_published_is_not_adopted(backend, model: Path) -> None:
    put_tree(backend, model, str(STOCK))
    claim = f"{backend.root}/.cloud-exporter-staging/{STOCK}.claim"
    write_object(backend.fs, claim, b"w1-abc")  # our publish of STOCK is in flight
    report = adopt(backend.base, storage_options=backend.storage_options)
    assert report.adopted == [] and "in flight" in report.refused[STOCK]


def test_concurrent_adopts_commit_each_directory_once(backend, model: Path) -> None:
    names = [STOCK + i for i in range(3)]
    for name in names:
        put_tree(backend, model, str(name))
    barrier = threading.Barrier(3)
    reports = []

    def run() -> None:
        barrier.wait()
        reports.append(adopt(backend.base, storage_options=backend.storage_options))

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    adopted = [i.version for r in reports for i in r.adopted]
    assert sorted(adopted) == names  # each exactly once
    writers = {
        e.writer_id for e in list_exports(backend.base, storage_options=backend.storage_options)
    }
    assert len(writers) >= 1 and all(w.startswith("adopt-") for w in writers)


def test_cli_adopt_text_json_and_dry_run(tmp_path: Path, model: Path) -> None:
    base = tmp_path / "exports"
    (base / str(STOCK)).mkdir(parents=True)
    for relpath, data in tree(model).items():
        target = base / str(STOCK) / relpath
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    (base / str(STOCK + 1)).mkdir()
    (base / str(STOCK + 1) / "variables").mkdir()
    dry = cli("adopt", str(base), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"would adopt file://{base}/{STOCK}" in dry.stdout
    assert list_exports(str(base)) == []
    done = cli("adopt", str(base), "--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert [a["version"] for a in doc["adopted"]] == [STOCK]
    assert doc["dry_run"] is False and doc["refused"] == {}  # an empty dir lists nothing
    listed = cli("list", str(base), "--json")
    assert [e["version"] for e in json.loads(listed.stdout)] == [STOCK]
    assert "nothing to adopt" in cli("adopt", str(base)).stdout
    help_text = cli("adopt", "--help").stdout
    assert "--dry-run" in help_text and "BASE" in help_text


def test_cli_adopt_on_a_server(server_backend, model: Path) -> None:
    put_tree(server_backend, model, str(STOCK))
    done = cli("adopt", server_backend.base, "--json", *options(server_backend))
    assert done.returncode == 0, done.stderr
    assert [a["version"] for a in json.loads(done.stdout)["adopted"]] == [STOCK]


def test_adopt_alongside_publishes_and_prunes(backend, model: Path) -> None:
    """Publishes and prunes run while adopt runs again and again: every publish commits, each
    stock dir is adopted once, and everything listed verifies."""
    for i in range(2):
        put_tree(backend, model, str(STOCK + i))
    opts = backend.storage_options
    errors: list[BaseException] = []
    stop = threading.Event()
    adopted: list[int] = []

    def adopter() -> None:
        while not stop.is_set():
            try:
                adopted.extend(i.version for i in adopt_exports(backend.base, storage_options=opts))
            except BaseException as exc:  # reported below
                errors.append(exc)
                return

    thread = threading.Thread(target=adopter)
    thread.start()
    try:
        published = [publish(str(model), backend.base, storage_options=opts) for _ in range(3)]
        prune(backend.base, keep=10, grace_seconds=0, storage_options=opts)
    finally:
        stop.set()
        thread.join(120)
    assert errors == []
    adopted.extend(i.version for i in adopt_exports(backend.base, storage_options=opts))
    assert sorted(adopted) == [STOCK, STOCK + 1]  # each exactly once, whenever it happened
    assert all("adopted" not in p.metadata for p in published)
    listed = list_exports(backend.base, storage_options=opts)
    assert [e.version for e in listed][-3:] == [p.version for p in published]
    for export in listed:
        verify_export(backend.base, export.version, storage_options=opts)


@pytest.mark.parametrize("name", ["exp[1]", "exp?1", "exp*", "a b#c%41", "ünï-çødé"])
def test_adopt_takes_a_hostile_base_literally(backend, model: Path, name: str) -> None:
    """A base whose name fsspec would expand as a glob adopts its own directories only."""
    hostile = f"{backend.scratch}/models/{name}"
    sibling = f"{backend.scratch}/models/exp1"  # what exp[1], exp?1 and exp* would match
    hostile_root, sibling_root = backend.strip(hostile), backend.strip(sibling)
    for root in (hostile_root, sibling_root):
        for relpath, data in tree(model).items():
            write_object(backend.fs, f"{root}/{STOCK}/{relpath}", data)
    report = adopt(hostile, storage_options=backend.storage_options)
    assert [i.version for i in report.adopted] == [STOCK]
    assert report.refused == {}
    assert [e.version for e in list_exports(hostile, filesystem=backend.new_fs())] == [STOCK]
    assert list_exports(sibling, filesystem=backend.new_fs()) == []
    verify_export(hostile, STOCK, deep=True, filesystem=backend.new_fs())
