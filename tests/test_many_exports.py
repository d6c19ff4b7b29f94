"""list/latest/prune over many exports: listing pages plus one GET per marker, nothing else.

Requests are counted at the HTTP level on the real servers (a botocore hook on s3fs, a wrapper
around gcsfs's ``_request``), so a HEAD that the backend adds behind one fsspec call shows.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

import cloud_exporter as ce
from cloud_exporter import __version__
from cloud_exporter.layout import marker_path, version_dir
from cloud_exporter.marker import FileRecord, encode_marker
from cloud_exporter.source import Digests
from cloud_exporter.testing import FaultyFileSystem

FIRST = 1_700_000_000


def populate(fs: Any, root: str, count: int, *, first: int = FIRST) -> list[int]:
    """``count`` committed exports of one tiny saved_model.pb each, written directly."""
    objects: dict[str, bytes] = {}
    versions = list(range(first, first + count))
    for i, version in enumerate(versions):
        data = f"model {version}".encode()
        digests = Digests(sha256=False)
        digests.update(data)
        objects[f"{version_dir(root, version)}/saved_model.pb"] = data
        record = FileRecord("saved_model.pb", len(data), None, digests.crc32c)
        objects[marker_path(root, version)] = encode_marker(
            version, 1e9 + i, [record], {"step": i}, "test", __version__
        )
    for path, data in objects.items():
        if "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)):
            fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        fs.pipe_file(path, data)
    fs.invalidate_cache()
    return versions


@contextlib.contextmanager
def http_requests(fs: Any) -> Iterator[Counter[str]]:
    """Count the HTTP requests ``fs`` sends inside the block, by operation."""
    counts: Counter[str] = Counter()
    if fs.protocol[0] == "s3":

        def before_send(event_name: str = "", **_: Any) -> None:
            counts[event_name.rsplit(".", 1)[-1]] += 1

        events = fs.s3.meta.events
        events.register("before-send.s3", before_send)
        try:
            yield counts
        finally:
            events.unregister("before-send.s3", before_send)
        return
    original = fs._request

    async def counted(method: str, path: str, *args: Any, **kwargs: Any) -> Any:
        url = path if path.startswith("http") else fs._format_path(path, args)
        media = kwargs.get("alt") == "media" or "alt=media" in url
        name = "get" if media else "list" if url.split("?")[0].endswith("/o") else method
        counts[name] += 1
        return await original(method, path, *args, **kwargs)

    fs._request = counted
    try:
        yield counts
    finally:
        fs._request = original


GETS = ("GetObject", "get")
LISTS = ("ListObjectsV2", "list")


def _sum(counts: Counter[str], names: tuple[str, ...]) -> int:
    return sum(counts[n] for n in names)


@pytest.mark.parametrize("count", [1, 37])
def test_list_and_latest_cost_pages_plus_marker_gets(server_backend, count):
    fs = server_backend.fs
    versions = populate(fs, server_backend.root, count)
    with http_requests(fs) as listed:
        found = ce.list_exports(server_backend.base, filesystem=fs)
    assert [e.version for e in found] == versions
    assert found[-1].metadata == {"step": count - 1}
    assert _sum(listed, GETS) == count
    assert _sum(listed, LISTS) == 1  # 2 objects per export: one page
    assert sum(listed.values()) == count + 1, listed  # no HEAD per marker
    with http_requests(fs) as latest:
        info = ce.latest_export(server_backend.base, filesystem=fs)
    assert info is not None and info.version == versions[-1]
    assert _sum(latest, GETS) == 1 and sum(latest.values()) == 2, latest


def test_prune_reads_each_marker_once(server_backend):
    fs = server_backend.fs
    versions = populate(fs, server_backend.root, 30)
    with http_requests(fs) as counts:
        report = ce.prune(server_backend.base, keep=4, filesystem=fs)
    assert report.deleted == versions[:-4]
    assert [e.version for e in ce.list_exports(server_backend.base, filesystem=fs)] == versions[-4:]
    assert _sum(counts, GETS) == 30, counts  # every marker once, nothing read twice
    assert counts["HeadObject"] == 0, counts
    if server_backend.name == "s3":  # markers, models, then a batch of the rest (none here)
        assert counts["DeleteObjects"] <= 3, counts


def test_many_exports_under_glob_and_unicode_base(backend):
    """Marker paths with ``[``/``*``/``?`` are read one by one, literally: a sibling base that
    the glob would match is never read, and results are exact."""
    fs = backend.fs
    base = backend.join("exp[1] *ü?")
    root = backend.strip(base)
    decoy = backend.strip(backend.join("exp1 xüy"))
    mine = populate(fs, root, 5)
    populate(fs, decoy, 3, first=FIRST + 100)
    assert [e.version for e in ce.list_exports(base, filesystem=fs)] == mine
    assert ce.latest_export(base, filesystem=fs).version == mine[-1]
    report = ce.prune(base, keep=2, filesystem=fs)
    assert report.deleted == mine[:3]
    assert [e.version for e in ce.list_exports(base, filesystem=fs)] == mine[-2:]
    assert len(ce.list_exports(backend.join("exp1 xüy"), filesystem=fs)) == 3


def test_empty_and_oversized_markers_among_many(backend, caplog):
    """A 0-byte marker (a ranged GET of it answers 416 on S3/GCS) and one cut short are
    reported invalid; the batch still serves every other export."""
    fs = backend.fs
    versions = populate(fs, backend.root, 12)
    fs.pipe_file(marker_path(backend.root, versions[3]), b"")
    fs.pipe_file(marker_path(backend.root, versions[5]), b'{"format": "cloud-exporter')
    fs.invalidate_cache()
    found = [e.version for e in ce.list_exports(backend.base, filesystem=fs)]
    assert found == [v for v in versions if v not in (versions[3], versions[5])]
    report = ce.prune(backend.base, keep=3, dry_run=True, filesystem=fs)
    assert set(report.skipped) == {versions[3], versions[5]}
    assert "ignoring version" in caplog.text


def test_paged_listing_matches_the_one_piece_listing(server_backend):
    """Storage's page-by-page listing (what list/prune read markers from while it goes on)
    returns exactly what one recursive listing returns: names taken literally, nothing of a
    sibling prefix, sizes, times and (GCS) CRC32Cs equal."""
    from cloud_exporter.storage import Storage
    from cloud_exporter.storage_pages import list_pages

    fs = server_backend.fs
    root = backend_root = server_backend.strip(server_backend.join("b[1] *?#% é"))
    names = ["1/saved_model.pb", "1/a b/c[2]*?.txt", "x#%ü", "2/variables/v.index", "3/e", "4/f"]
    for i, name in enumerate(names):
        fs.pipe_file(f"{root}/{name}", b"x" * i)
    fs.pipe_file(f"{backend_root}2/not-mine", b"decoy")  # shares the prefix string
    fs.pipe_file(server_backend.strip(server_backend.join("b1 xy", "1/decoy")), b"glob decoy")
    storage = Storage(fs)
    pages = list(list_pages(storage, root, page_size=2))
    assert len(pages) == 3 and all(len(p) == 2 for p in pages)
    paged = sorted((e.relpath, e.size, e.mtime, e.crc32c) for p in pages for e in p)
    whole = sorted((e.relpath, e.size, e.mtime, e.crc32c) for e in storage.list_tree(root))
    assert paged == whole
    assert sorted(e[0] for e in paged) == sorted(names)
    if server_backend.name == "gcs":
        assert all(e[3] for e in paged)


def test_list_and_prune_read_markers_page_by_page(server_backend, monkeypatch):
    """With 3 entries a page: list_exports lists only the 10 version directories (4 pages on
    S3; fake-gcs-server ignores maxResults in a delimiter listing and answers in one page,
    real GCS pages it), prune lists the 20 objects recursively (7 pages, then its own checks);
    every marker is read once, and the result equals the one-piece path's (the fault layer
    forces that one)."""
    from cloud_exporter import storage_pages
    from cloud_exporter.testing import FaultyFileSystem

    monkeypatch.setattr(storage_pages, "PAGE_SIZE", 3)
    fs = server_backend.fs
    versions = populate(fs, server_backend.root, 10)
    with http_requests(fs) as counts:
        found = ce.list_exports(server_backend.base, filesystem=fs)
    assert [e.version for e in found] == versions
    assert [e.metadata["step"] for e in found] == list(range(10))
    pages = 4 if server_backend.name == "s3" else 1
    assert _sum(counts, LISTS) == pages and _sum(counts, GETS) == 10, counts
    whole = ce.list_exports(server_backend.base, filesystem=FaultyFileSystem(fs))
    assert whole == found
    with http_requests(fs) as counts:
        report = ce.prune(server_backend.base, keep=3, filesystem=fs)
    assert report.deleted == versions[:7] and sorted(report.kept) == versions[7:]
    assert _sum(counts, GETS) == 10 and _sum(counts, LISTS) >= 7, counts  # recursive pages


def test_list_and_latest_list_version_directories_not_their_files(
    server_backend, monkeypatch, caplog
):
    """On S3 and GCS list_exports and latest_export list the base's children (a delimiter
    listing), so 25 files per export cost no more pages than one. A newer version directory
    without a marker (a publish in flight) costs one GET that finds nothing and is not
    reported; an oversized marker is; objects beside the versions and non-version
    directories are ignored. Glob characters, spaces and unicode in the base."""
    from cloud_exporter import storage_pages
    from cloud_exporter.marker import MAX_MARKER_BYTES

    monkeypatch.setattr(storage_pages, "PAGE_SIZE", 3)
    fs = server_backend.fs
    root = server_backend.strip(server_backend.join("wide [1]*?#% ü"))
    base = server_backend.join("wide [1]*?#% ü")
    versions = populate(fs, root, 4)
    extra = {
        f"{version_dir(root, v)}/variables/v.data-{i:05d}": b"w"
        for v in versions
        for i in range(24)
    }
    in_flight, oversized = FIRST + 10, FIRST + 5
    extra[f"{version_dir(root, in_flight)}/variables/v.data-00000"] = b"half"
    extra[f"{version_dir(root, oversized)}/saved_model.pb"] = b"m"
    extra[marker_path(root, oversized)] = b" " * (MAX_MARKER_BYTES + 1)
    extra[f"{root}/.cloud-exporter-staging/{in_flight}.claim"] = b"c"
    extra[f"{root}/{FIRST + 20}"] = b"an object, not a directory"
    extra[f"{root}/notes/readme"] = b"foreign"
    fs.pipe(extra)
    fs.invalidate_cache()
    with http_requests(fs) as listed:
        found = ce.list_exports(base, filesystem=fs)
    assert [e.version for e in found] == versions
    # 9 names below the base: 4 exports, the oversized and the in-flight version, staging,
    # notes, and the object named like a version (its marker GET finds nothing)
    pages = 3 if server_backend.name == "s3" else 1  # fake-gcs-server: one page (see above)
    assert _sum(listed, LISTS) == pages and _sum(listed, GETS) == 7, listed
    assert f"ignoring version {oversized}" in caplog.text
    assert f"ignoring version {in_flight}" not in caplog.text
    with http_requests(fs) as latest:
        info = ce.latest_export(base, filesystem=fs)
    assert info is not None and info.version == versions[-1]
    # newest first: the object, the in-flight version (nothing), the oversized one (invalid)
    assert _sum(latest, GETS) == 4 and _sum(latest, LISTS) == pages, latest
    whole = ce.list_exports(base, filesystem=FaultyFileSystem(fs))  # the recursive path
    assert whole == found


def test_local_walk_matches_fsspec_find(tmp_path):
    """Local disk is listed with os.scandir, not fsspec's find: the same entries (names taken
    literally, sizes, times, order); links left out as find leaves them out (a link cycle
    cannot trap the walk); a missing base, or a file, lists as nothing."""
    import os

    from fsspec.implementations.local import LocalFileSystem

    from cloud_exporter.storage import Storage
    from cloud_exporter.testing import FaultyFileSystem

    root = tmp_path / "b[1] *?#% é"
    names = ["1/saved_model.pb", "1/a b/c[2]*?.txt", "x#%ü", "2/variables/v.index", "3/e", "4/f"]
    for i, name in enumerate(names):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"x" * i)
    (root / "empty dir").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "linked.bin").write_bytes(b"12345")
    os.symlink(tmp_path / "elsewhere", root / "5")
    os.symlink(tmp_path / "elsewhere" / "linked.bin", root / "1" / "link.bin")
    os.symlink(root, root / "3" / "loop")  # a cycle back to the base
    os.symlink(tmp_path / "gone", root / "dangling")
    (tmp_path / "b[1] *?#% é2").mkdir()  # shares the prefix string
    (tmp_path / "b[1] *?#% é2" / "decoy").write_bytes(b"decoy")
    fs = LocalFileSystem()
    storage = Storage(fs)
    assert storage.exact_listings and not Storage(FaultyFileSystem(fs)).exact_listings
    walked = [(e.relpath, e.size, e.mtime) for e in storage.list_tree(str(root))]
    assert [w[0] for w in walked] == sorted(names)
    via_find = Storage(FaultyFileSystem(fs)).list_tree(str(root))  # fsspec's find
    assert walked == [(e.relpath, e.size, e.mtime) for e in via_find]
    assert storage.list_tree(str(tmp_path / "missing")) == []
    assert storage.list_tree(str(root / "x#%ü")) == []  # a file is not a directory


def test_local_walk_holds_one_folder_open_at_a_time(tmp_path):
    """A base of many version folders is walked under a small open-file limit: the walk opens
    one folder at a time, not one per folder it has seen (10,000 exports must not hit EMFILE)."""
    import subprocess
    import sys
    import textwrap

    for i in range(300):
        (tmp_path / str(i) / "variables").mkdir(parents=True)
        (tmp_path / str(i) / "saved_model.pb").write_bytes(b"pb")
    script = textwrap.dedent(f"""
        import resource, sys
        from fsspec.implementations.local import LocalFileSystem
        from cloud_exporter.storage import Storage
        storage = Storage(LocalFileSystem())
        resource.setrlimit(resource.RLIMIT_NOFILE, (96, 96))
        print(len(storage.list_tree({str(tmp_path)!r})))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "300"
