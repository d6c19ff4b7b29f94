"""The invariants every state of a base must satisfy, whatever crashed, failed or raced before.

Used after injected crashes, randomized faults, permission errors and concurrent processes:

``check_state``   the state right after the disturbance: every listed export verifies (deep:
                  the library's ``verify_export(deep=True)`` for new exports; for every export
                  ``verify_export`` plus our own hash of each file against its manifest), no
                  committed export was lost or changed except the ones a prune was asked to
                  delete, and every integer directory holding saved_model.pb holds exactly one
                  complete model (what TF Serving would load).
``check_clean``   the state after recovery: the committed exports and nothing else (on local disk
                  an empty staging directory may stay).

Every check reads through a filesystem the caller passes, which must not inject faults.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path
from typing import Any

import google_crc32c

import cloud_exporter as ce
from cloud_exporter.layout import MARKER_NAME, STAGING_DIRNAME, is_saved_model_file, parse_version
from cloud_exporter.marker import ExportInfo

Manifest = dict[str, str]  # relative path -> crc32c hex (as the marker records it)


def checksum(data: bytes) -> str:
    return google_crc32c.Checksum(data).digest().hex()


def manifest_of(source: Path | str, assets_extra: Mapping[str, str] | None = None) -> Manifest:
    """The files a publish of ``source`` (plus ``assets_extra``) puts into a version directory."""
    root = Path(source)
    found = {
        p.relative_to(root).as_posix(): checksum(p.read_bytes())
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }
    for dest, src in (assets_extra or {}).items():
        found[f"assets.extra/{dest}"] = checksum(Path(src).read_bytes())
    return found


def manifest_of_export(info: ExportInfo) -> Manifest:
    return {f.path: f.crc32c for f in info.files}


def committed(fs: Any, base: str) -> dict[int, ExportInfo]:
    """{version: export} for every export ``list_exports`` shows."""
    return {e.version: e for e in ce.list_exports(base, filesystem=fs)}


def raw_files(fs: Any, base: str) -> list[str]:
    """Every object below ``base``, relative to it, from a fresh listing (no library code)."""
    root = fs._strip_protocol(base).rstrip("/")
    fs.invalidate_cache()
    try:
        found = fs.find(root)
    except FileNotFoundError:
        return []
    return sorted(p[len(root) + 1 :] for p in found if p.startswith(root + "/"))


def version_dirs(paths: Iterable[str]) -> dict[int, list[str]]:
    """{version: [relative paths inside]} for the integer-named directories among ``paths``."""
    grouped: dict[int, list[str]] = {}
    for path in paths:
        head, _, rest = path.partition("/")
        version = parse_version(head)
        if version is not None and rest:
            grouped.setdefault(version, []).append(rest)
    return grouped


def check_state(
    fs: Any,
    base: str,
    before: Mapping[int, ExportInfo],
    *,
    may_lose: Collection[int] = (),
    trees: Iterable[Manifest] = (),
    context: str = "",
) -> dict[int, ExportInfo]:
    """Assert the invariants that must hold at any moment; return the committed exports now.

    ``before``: the exports committed before the disturbance; ``may_lose``: the versions a prune
    was asked to delete; ``trees``: what an export written during the disturbance may hold.
    """
    now = committed(fs, base)
    for version in now:  # exports seen before were hashed then; check_servable re-hashes all
        ce.verify_export(base, version, deep=version not in before, filesystem=fs)
    lost = sorted(set(before) - set(now) - set(may_lose))
    assert not lost, f"{context}: committed exports lost: {lost}"
    for version, info in before.items():
        if version in now:
            assert now[version].files == info.files, f"{context}: export {version} changed"
    known = {v: manifest_of_export(e) for v, e in {**before, **now}.items()}
    check_servable(fs, base, known, list(trees), context)
    return now


def check_servable(
    fs: Any, base: str, known: Mapping[int, Manifest], trees: list[Manifest], context: str = ""
) -> None:
    """Every integer directory with saved_model.pb holds exactly one complete model.

    A directory of a known export must match its manifest; any other one (an export in flight
    or half deleted) must match one of ``trees``, byte for byte.
    """
    root = fs._strip_protocol(base).rstrip("/")
    for version, files in version_dirs(raw_files(fs, base)).items():
        if not any(is_saved_model_file(f) for f in files):
            continue
        held = sorted(f for f in files if f != MARKER_NAME)
        contents = fs.cat([f"{root}/{version}/{f}" for f in held])
        have = {f: checksum(contents[f"{root}/{version}/{f}"]) for f in held}
        candidates = [known[version]] if version in known else trees
        assert any(have == tree for tree in candidates), (
            f"{context}: {version}/ holds saved_model.pb but not a complete model "
            f"(files: {held}; expected one of {[sorted(t) for t in candidates]})"
        )


def check_clean(
    fs: Any, base: str, expected: Collection[int], *, local: bool, context: str = ""
) -> dict[int, ExportInfo]:
    """After recovery: exactly the ``expected`` exports, each intact, and no other object."""
    now = committed(fs, base)
    assert sorted(now) == sorted(expected), (
        f"{context}: exports {sorted(now)} != {sorted(expected)}"
    )
    allowed = {
        f"{v}/{path}"
        for v, info in now.items()
        for path in [*manifest_of_export(info), MARKER_NAME]
    }
    for version in now:
        ce.verify_export(base, version, deep=True, filesystem=fs)
    extra = sorted(set(raw_files(fs, base)) - allowed)
    assert not extra, f"{context}: leftovers after recovery: {extra}"
    if local:
        check_local_dirs(base, now, context)
    return now


def check_local_dirs(base: str, exports: Mapping[int, ExportInfo], context: str = "") -> None:
    """On local disk nothing is left but the exports' directories and the staging directory,
    which holds no file (empty directories a crash left inside it are invisible to every
    reader, TF Serving included)."""
    if not os.path.isdir(base):
        return
    for name in os.listdir(base):
        path = os.path.join(base, name)
        if name == STAGING_DIRNAME:
            files = [f for _, _, found in os.walk(path) for f in found]
            assert files == [], f"{context}: files left in staging: {files}"
            continue
        version = parse_version(name)
        assert version in exports, f"{context}: unexpected directory or file {name}"
        for dirpath, dirnames, filenames in os.walk(path):
            assert dirnames or filenames, f"{context}: empty directory {dirpath}"
