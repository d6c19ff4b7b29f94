"""Bad input, table-driven: a typed error naming the problem, nothing published or touched."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from savedmodels import fake_saved_model, write_object

import cloud_exporter as ce
from cloud_exporter import source as source_module
from cloud_exporter.layout import MARKER_NAME


@dataclass
class Case:
    id: str
    call: Callable[[Any, Path], Any]  # (backend, tmp_path) -> None; must raise
    error: type[BaseException]
    match: str


def model(tmp: Path) -> Path:
    return fake_saved_model(tmp / "model", seed=5)


def extra(dest: str) -> Callable[[Any, Path], Any]:
    def call(b: Any, tmp: Path) -> Any:
        (tmp / "asset.txt").write_text("x")
        return ce.publish(
            model(tmp), b.base, assets_extra={dest: str(tmp / "asset.txt")}, filesystem=b.fs
        )

    return call


def source(make: Callable[[Path], Path]) -> Callable[[Any, Path], Any]:
    return lambda b, tmp: ce.publish(make(tmp), b.base, filesystem=b.fs)


def empty_dir(tmp: Path) -> Path:
    (tmp / "empty").mkdir()
    return tmp / "empty"


def no_graph(tmp: Path) -> Path:
    root = model(tmp)
    (root / "saved_model.pb").unlink()
    return root


def a_file(tmp: Path) -> Path:
    (tmp / "file.pb").write_bytes(b"x")
    return tmp / "file.pb"


def escaping_link(tmp: Path) -> Path:
    root = model(tmp)
    (tmp / "secret.txt").write_text("outside")
    os.symlink(tmp / "secret.txt", root / "assets" / "link.txt")
    return root


def escaping_dir_link(tmp: Path) -> Path:
    root = model(tmp)
    (tmp / "elsewhere").mkdir()
    (tmp / "elsewhere" / "f").write_text("x")
    os.symlink(tmp / "elsewhere", root / "assets" / "dir")
    return root


def reserved_name(tmp: Path) -> Path:
    root = model(tmp)
    (root / MARKER_NAME).write_text("{}")
    return root


def publish_with(**kwargs: Any) -> Callable[[Any, Path], Any]:
    return lambda b, tmp: ce.publish(model(tmp), b.base, filesystem=b.fs, **kwargs)


CASES = [
    Case("missing-source", source(lambda t: t / "nope"), ce.InvalidSourceError, "does not exist"),
    Case("empty-source", source(empty_dir), ce.InvalidSourceError, "no saved_model.pb"),
    Case("no-saved-model", source(no_graph), ce.InvalidSourceError, "no saved_model.pb"),
    Case("file-not-dir", source(a_file), ce.InvalidSourceError, "is a file, not a directory"),
    Case("symlink-escape", source(escaping_link), ce.InvalidSourceError, "points outside"),
    Case("dir-symlink-escape", source(escaping_dir_link), ce.InvalidSourceError, "points outside"),
    Case("reserved-name", source(reserved_name), ce.InvalidSourceError, "reserved name"),
    Case("extra-dotdot", extra("../x"), ce.InvalidArgumentError, "'..'"),
    Case("extra-absolute", extra("/abs"), ce.InvalidArgumentError, "not absolute"),
    Case("extra-nested-dotdot", extra("a/../../b"), ce.InvalidArgumentError, "'..'"),
    Case("extra-empty", extra(""), ce.InvalidArgumentError, "non-empty"),
    Case("extra-drive", extra("C:\\\\x"), ce.InvalidArgumentError, "not absolute"),
    Case("extra-drive-slash", extra("C:/x"), ce.InvalidArgumentError, "not absolute"),
    Case(
        "extra-missing-source",
        lambda b, tmp: ce.publish(
            model(tmp), b.base, assets_extra={"a": str(tmp / "missing")}, filesystem=b.fs
        ),
        ce.InvalidArgumentError,
        "missing",
    ),
    Case(
        "extra-dir-source",
        lambda b, tmp: ce.publish(
            model(tmp), b.base, assets_extra={"a": str(tmp)}, filesystem=b.fs
        ),
        ce.InvalidArgumentError,
        "a directory",
    ),
    Case("extra-not-mapping", publish_with(assets_extra=["a"]), ce.InvalidArgumentError, "mapping"),
    Case("keep-zero", publish_with(keep=0), ce.InvalidArgumentError, "keep must be a positive"),
    Case("keep-negative", publish_with(keep=-3), ce.InvalidArgumentError, "keep must be"),
    Case("version-str", publish_with(version="12"), ce.InvalidArgumentError, "must be an int"),
    Case("version-float", publish_with(version=1.5), ce.InvalidArgumentError, "must be an int"),
    Case("version-negative", publish_with(version=-1), ce.InvalidArgumentError, "version must be"),
    Case(
        "metadata-object",
        publish_with(metadata={"x": object()}),
        ce.InvalidArgumentError,
        "JSON-serializable",
    ),
    Case(
        "metadata-nan",
        publish_with(metadata={"loss": float("nan")}),
        ce.InvalidArgumentError,
        "finite",
    ),
    Case("metadata-list", publish_with(metadata=[1]), ce.InvalidArgumentError, "must be a dict"),
    Case("mode", publish_with(mode="yolo"), ce.InvalidArgumentError, "mode must be"),
    Case(
        "unknown-scheme",
        lambda b, tmp: ce.publish(model(tmp), "nosuchscheme://bucket/x"),
        ce.InvalidArgumentError,
        "not a known storage scheme",
    ),
    Case(
        "fs-and-options",
        lambda b, tmp: ce.publish(model(tmp), b.base, filesystem=b.fs, storage_options={"a": 1}),
        ce.InvalidArgumentError,
        "not both",
    ),
    Case(
        "prune-keep-zero",
        lambda b, tmp: ce.prune(b.base, keep=0, filesystem=b.fs),
        ce.InvalidArgumentError,
        "keep must be",
    ),
    Case(
        "prune-best-mode",
        lambda b, tmp: ce.prune(b.base, keep_best=("loss", "avg", 1), filesystem=b.fs),
        ce.InvalidArgumentError,
        "'min' or 'max'",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_refused_before_anything_is_written(case, backend, tmp_path):
    with pytest.raises(case.error, match=case.match) as raised:
        case.call(backend, tmp_path)
    assert isinstance(raised.value, ce.CloudExporterError)
    fs = backend.new_fs()
    assert not fs.exists(backend.root) or fs.find(backend.root) == []


def test_missing_bucket_is_a_typed_error(server_backend, tmp_path):
    scheme = "s3" if server_backend.name == "s3" else "gs"
    base = f"{scheme}://no-such-bucket-ce/models/x"
    opts = server_backend.storage_options
    with pytest.raises(ce.LocationNotFoundError, match="no-such-bucket-ce"):
        ce.publish(model(tmp_path), base, storage_options=opts)
    with pytest.raises(ce.LocationNotFoundError, match="bucket"):
        ce.list_exports(base, storage_options=opts)
    with pytest.raises(ce.LocationNotFoundError, match="bucket"):  # not None: no such base
        ce.latest_export(base, storage_options=opts)


def _marker(files: list[dict[str, Any]], version: int = 5, **over: Any) -> bytes:
    doc = {
        "format": "cloud-exporter-marker",
        "format_version": 1,
        "version": version,
        "created": 1.7e9,
        "writer_id": "w",
        "library_version": "0",
        "metadata": {},
        "files": files,
    }
    doc.update(over)
    return json.dumps(doc).encode()


SHA = "a" * 64
HOSTILE_MARKERS = {
    "truncated": _marker([{"path": "saved_model.pb", "size": 1, "sha256": SHA}])[:40],
    "not-utf8": b"\xff\xfe{}",
    "dotdot-path": _marker(
        [
            {"path": "../../victim.txt", "size": 6, "sha256": SHA},
            {"path": "saved_model.pb", "size": 1, "sha256": SHA},
        ]
    ),
    "absolute-path": _marker(
        [
            {"path": "/etc/passwd", "size": 6, "sha256": SHA},
            {"path": "saved_model.pb", "size": 1, "sha256": SHA},
        ]
    ),
    "huge-size": _marker([{"path": "saved_model.pb", "size": 10**30, "sha256": SHA}]),
    "bad-sha": _marker([{"path": "saved_model.pb", "size": 1, "sha256": "zz"}]),
    "wrong-version": _marker([{"path": "saved_model.pb", "size": 1, "sha256": SHA}], version=6),
    "extra-key": _marker([{"path": "saved_model.pb", "size": 1, "sha256": SHA}], evil=True),
    "nan-created": _marker([{"path": "saved_model.pb", "size": 1, "sha256": SHA}]).replace(
        b"1700000000.0", b"NaN"
    ),
    "no-graph": _marker([{"path": "variables/x", "size": 1, "sha256": SHA}]),
    "not-object": b"[1, 2, 3]",
}


@pytest.mark.parametrize("name", sorted(HOSTILE_MARKERS))
def test_hostile_marker_is_invalid_and_touches_nothing_outside(name, backend, tmp_path):
    fs = backend.fs
    victim = backend.strip(backend.base.rsplit("/", 1)[0] + "/victim.txt")
    write_object(fs, victim, b"victim")
    ce.publish(model(tmp_path), backend.base, version=4, filesystem=fs)
    write_object(fs, backend.strip(backend.join("5", "saved_model.pb")), b"g")
    write_object(fs, backend.strip(backend.join("5", MARKER_NAME)), HOSTILE_MARKERS[name])

    assert [e.version for e in ce.list_exports(backend.base, filesystem=fs)] == [4]
    assert ce.latest_export(backend.base, filesystem=fs).version == 4
    with pytest.raises(ce.CorruptExportError, match=r"marker .* is invalid"):
        ce.verify_export(backend.base, 5, deep=True, filesystem=fs)
    report = ce.prune(backend.base, keep=1, grace_seconds=0, filesystem=fs)
    assert 5 in report.skipped and report.deleted == []
    assert backend.new_fs().cat_file(victim) == b"victim"
    assert backend.new_fs().exists(backend.strip(backend.join("5", "saved_model.pb")))


def test_a_source_file_that_grows_during_a_local_publish_is_refused(tmp_path, monkeypatch):
    """The local copy checks each copied file against the size validated at the start: a file
    that a still-running process appends to between the check and the copy is refused, and no
    version appears (the build directory is never renamed into place)."""
    src = model(tmp_path)
    base = tmp_path / "exports"
    real_digest_stream = source_module.digest_stream

    def copy_while_growing(f: Any, *args: Any) -> Any:
        if f.name.endswith("variables.index"):
            with open(f.name, "ab") as grow:
                grow.write(b"appended by a writer still running")
        return real_digest_stream(f, *args)

    monkeypatch.setattr(source_module, "digest_stream", copy_while_growing)
    with pytest.raises(ce.InvalidSourceError, match=r"variables\.index.*changed while"):
        ce.publish(src, str(base))
    assert ce.list_exports(str(base)) == []
    assert sorted(p.name for p in base.iterdir()) == []  # no version, no staging left
