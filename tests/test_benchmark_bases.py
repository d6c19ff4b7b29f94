"""The benchmarks' synthetic bases are bases our readers accept: a benchmark that times
``list_exports`` over markers the parser refuses measures nothing (the requests section once
did, after the marker format gained CRC32C)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cloud_exporter as ce
from benchmarks import many_bench, reqs
from benchmarks.backends import open_store


@pytest.mark.parametrize("populate", ["reqs", "many"])
def test_a_populated_base_lists_every_export_as_valid(tmp_path: Path, caplog, populate) -> None:
    with open_store("local", str(tmp_path)) as store:
        if populate == "reqs":
            reqs.populate(store, "base", 12, 3)
        else:
            many_bench.populate(store, "base", 12)
        found = ce.list_exports(store.uri("base"))
        assert len(found) == 12
        assert "ignoring version" not in caplog.text
        ce.verify_export(store.uri("base"), found[0].version, deep=True)
