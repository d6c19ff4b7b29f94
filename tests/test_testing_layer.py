"""The public fault-injection layer, cloud_exporter.testing."""

from __future__ import annotations

import errno
import pickle
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fsspec.implementations.local import LocalFileSystem
from fsspec.implementations.memory import MemoryFileSystem

from cloud_exporter.testing import (
    TRANSIENT_KINDS,
    FailOn,
    FaultyFileSystem,
    InjectedCrash,
    innermost,
    transient_error,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def mem() -> Iterator[str]:
    """A unique root in the (process-global) memory store, removed afterwards."""
    root = f"/tl-{uuid.uuid4().hex[:12]}"
    yield root
    store = MemoryFileSystem.store
    for key in [k for k in store if k.startswith(root + "/")]:
        del store[key]
    MemoryFileSystem.pseudo_dirs[:] = [
        d for d in MemoryFileSystem.pseudo_dirs if not (d == root or d.startswith(root + "/"))
    ]


@pytest.fixture(params=["memory", "local"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Any, str]:
    """(inner filesystem, fresh root) over memory:// and the local disk."""
    if request.param == "memory":
        return MemoryFileSystem(), request.getfixturevalue("mem")
    return LocalFileSystem(auto_mkdir=True), str(tmp_path / "store")


def _pipe_many(fs: FaultyFileSystem, root: str, n: int) -> list[str]:
    """pipe_file n files, recording each outcome (the error kind's message, or "ok")."""
    outcomes = []
    for i in range(n):
        try:
            fs.pipe_file(f"{root}/f{i}", b"x" * i)
            outcomes.append("ok")
        except OSError as exc:
            outcomes.append(exc.strerror)
    return outcomes


# -- transient faults ------------------------------------------------------------------------


def test_transient_rate_is_deterministic_per_seed_and_never_mutates(store: Any) -> None:
    inner, root = store
    runs = []
    for attempt, seed in enumerate((7, 7, 8)):
        fs = FaultyFileSystem(inner, seed=seed, transient_rate=0.5)
        outcomes = _pipe_many(fs, f"{root}/run{attempt}", 40)
        runs.append(outcomes)
        for i, outcome in enumerate(outcomes):
            assert inner.exists(f"{root}/run{attempt}/f{i}") == (outcome == "ok")
        assert [c.outcome for c in fs.calls] == [
            "ok" if o == "ok" else "transient" for o in outcomes
        ]
        assert all(c.applied == (c.outcome == "ok") for c in fs.calls)
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]
    assert 5 < runs[0].count("ok") < 35
    assert len(set(runs[0])) == 5  # "ok" and all four kinds


def test_transient_errors_have_the_documented_shapes() -> None:
    shapes = {k: transient_error(k, "b/k") for k in TRANSIENT_KINDS}
    assert type(shapes["slow_down"]) is OSError
    assert (shapes["slow_down"].errno, shapes["slow_down"].strerror) == (
        errno.EBUSY,
        "injected 503 SlowDown",
    )
    assert shapes["too_many_requests"].errno == errno.EBUSY
    assert shapes["too_many_requests"].strerror == "injected 429 Too Many Requests"
    assert isinstance(shapes["connection_reset"], ConnectionResetError)
    assert isinstance(shapes["timeout"], TimeoutError)
    assert all(e.filename == "b/k" for e in shapes.values())
    assert not issubclass(InjectedCrash, OSError)


def test_rate_per_method(mem: str) -> None:
    fs = FaultyFileSystem(MemoryFileSystem(), transient_rate={"cat_file": 1.0})
    for i in range(10):
        fs.pipe_file(f"{mem}/f{i}", b"data")
        with pytest.raises(OSError):
            fs.cat_file(f"{mem}/f{i}")
    assert fs.inner.cat_file(f"{mem}/f9") == b"data"
    fs.transient_rate = {"*": 1.0, "cat_file": 0.0}
    assert fs.cat_file(f"{mem}/f0") == b"data"
    with pytest.raises(OSError):
        fs.exists(f"{mem}/f0")


def test_fail_after_mutation_applies_it_and_a_retried_create_finds_its_object(mem: str) -> None:
    fs = FaultyFileSystem(
        MemoryFileSystem(), transient_rate={"pipe_file": 1.0}, fail_after_mutation_rate=1.0
    )
    path = f"{mem}/marker"
    with pytest.raises(OSError) as info:
        fs.pipe_file(path, b"mine", mode="create")
    assert info.value.errno in (errno.EBUSY, errno.ECONNRESET, errno.ETIMEDOUT)
    assert fs.inner.cat_file(path) == b"mine"
    call = fs.calls[-1]
    assert (call.outcome, call.applied, call.injected) == ("transient", True, True)
    assert fs.mutations() == [("pipe_file", path)]
    fs.transient_rate = 0.0
    with pytest.raises(FileExistsError):
        fs.pipe_file(path, b"mine", mode="create")
    assert fs.calls[-1].outcome == "error" and not fs.calls[-1].injected


def test_fail_on_nth_call_and_predicate(mem: str) -> None:
    denied = PermissionError(errno.EACCES, "denied")
    fs = FaultyFileSystem(
        MemoryFileSystem(),
        fail_on=[
            FailOn(method="pipe_file", nth=2),
            FailOn(
                predicate=lambda method, path: method == "rm_file" and path.endswith("keep"),
                error=denied,
                times=None,
            ),
        ],
    )
    assert _pipe_many(fs, mem, 3)[:3:2] == ["ok", "ok"]
    assert fs.calls[1].outcome == "transient"
    assert not fs.inner.exists(f"{mem}/f1")
    fs.pipe_file(f"{mem}/keep", b"")
    for _ in range(2):
        with pytest.raises(PermissionError):
            fs.rm_file(f"{mem}/keep")
    assert fs.calls[-1].outcome == "error" and fs.calls[-1].error is denied
    assert fs.inner.exists(f"{mem}/keep")
    fs.rm_file(f"{mem}/f0")
    assert not fs.inner.exists(f"{mem}/f0")


def test_open_for_writing_fails_at_open_or_loses_the_response_at_close(mem: str) -> None:
    fs = FaultyFileSystem(
        MemoryFileSystem(),
        fail_on=[FailOn(method="open", nth=1), FailOn(method="open", nth=2, after_mutation=True)],
    )
    with pytest.raises(OSError):
        fs.open(f"{mem}/a", "wb")
    assert not fs.inner.exists(f"{mem}/a")
    with pytest.raises(OSError), fs.open(f"{mem}/b", "wb") as f:
        f.write(b"written")
    assert fs.inner.cat_file(f"{mem}/b") == b"written"
    assert [(c.mutating, c.outcome) for c in fs.calls] == [(True, "transient")] * 2
    with fs.open(f"{mem}/b", "rb") as f:
        assert f.read() == b"written"
    assert fs.calls[-1].mutating is False
    assert fs.mutating_calls == 2


# -- crashes ---------------------------------------------------------------------------------


def _pipeline(fs: FaultyFileSystem, root: str) -> None:
    fs.pipe_file(f"{root}/stage/a", b"a")
    fs.pipe_file(f"{root}/stage/b", b"bb")
    fs.copy([f"{root}/stage/a", f"{root}/stage/b"], [f"{root}/final/a", f"{root}/final/b"])
    fs.pipe_file(f"{root}/final/marker", b"m", mode="create")
    fs.rm([f"{root}/stage/a", f"{root}/stage/b"])


def test_crash_sweep_blocks_the_kth_mutation_and_everything_after(mem: str) -> None:
    clean = FaultyFileSystem(MemoryFileSystem())
    _pipeline(clean, f"{mem}/clean")
    total = clean.mutating_calls
    assert total == 5
    clean_calls = [c for c in clean.calls if c.mutating]
    for k in range(1, total + 1):
        root = f"{mem}/k{k}"
        fs = FaultyFileSystem(MemoryFileSystem(), crash_after=k)
        with pytest.raises(InjectedCrash):
            _pipeline(fs, root)
        assert fs.crashed
        expected = [
            (c.method, t.replace("/clean/", f"/k{k}/"))
            for c in clean_calls[: k - 1]
            for t in c.targets
        ]
        assert fs.mutations() == expected
        assert len([c for c in fs.calls if c.applied]) == k - 1
        assert fs.calls[-1].outcome == "crash" and fs.calls[-1].mutating
        assert fs.inner.exists(f"{root}/final/marker") == (k > 4)
        assert fs.inner.exists(f"{root}/stage/a") == (k > 1)
        with pytest.raises(InjectedCrash):
            fs.exists(f"{root}/stage/a")  # reads after the crash fail too
    fs.reset_counters()
    fs.crash_after = None
    assert fs.exists(f"{mem}/k5/stage/a") and not fs.crashed


def test_batched_rm_is_one_mutating_call_and_a_crash_there_deletes_nothing(mem: str) -> None:
    fs = FaultyFileSystem(MemoryFileSystem())
    paths = [f"{mem}/x{i}" for i in range(3)]
    for p in paths:
        fs.pipe_file(p, b"1")
    fs.reset_counters()
    fs.rm(paths)
    assert fs.mutating_calls == 1 and len(fs.calls) == 1
    assert fs.calls[0].paths == tuple(paths)
    assert fs.mutations() == [("rm", p) for p in paths]
    for p in paths:
        fs.pipe_file(p, b"1")
    fs.crash_after = 4
    with pytest.raises(InjectedCrash):
        fs.rm(paths)
    assert all(fs.inner.exists(p) for p in paths)


def test_put_batch_counts_once_and_records_local_sources(tmp_path: Path, mem: str) -> None:
    sources = []
    for name in ("a", "b"):
        (tmp_path / name).write_bytes(name.encode())
        sources.append(str(tmp_path / name))
    fs = FaultyFileSystem(MemoryFileSystem())
    fs.put(sources, [f"{mem}/a", f"{mem}/b"])
    assert fs.mutating_calls == 1
    assert fs.calls[0].paths == (*sources, f"{mem}/a", f"{mem}/b")
    assert fs.mutations() == [("put", f"{mem}/a"), ("put", f"{mem}/b")]
    assert fs.inner.cat_file(f"{mem}/b") == b"b"


# -- stale listings --------------------------------------------------------------------------


def _stale_setup(inner: Any, root: str, **kwargs: Any) -> tuple[FaultyFileSystem, FakeClock]:
    clock = FakeClock()
    fs = FaultyFileSystem(inner, clock=clock, **kwargs)
    for name in ("old", "keep", "gone/deep"):
        fs.pipe_file(f"{root}/{name}", b"12345")
    clock.now += 100
    fs.pipe_file(f"{root}/new", b"1")
    fs.pipe_file(f"{root}/fresh/one", b"1")
    fs.rm([f"{root}/old", f"{root}/gone"], recursive=True)
    return fs, clock


def test_stale_listings_hide_new_and_show_deleted_until_time_passes(store: Any) -> None:
    inner, root = store
    fs, clock = _stale_setup(inner, root, stale_seconds=30)
    stale = {f"{root}/keep", f"{root}/old", f"{root}/gone/deep"}
    for _ in range(3):  # time-based: any number of listings stays stale
        assert set(fs.find(root)) == stale
    assert set(fs.ls(root, detail=False)) == {f"{root}/keep", f"{root}/old", f"{root}/gone"}
    details = {i["name"]: i for i in fs.ls(root)}
    assert details[f"{root}/old"]["size"] == 5 and details[f"{root}/old"]["type"] == "file"
    assert details[f"{root}/gone"]["type"] == "directory"
    assert [i["name"] for i in fs.ls(f"{root}/gone")] == [f"{root}/gone/deep"]
    assert set(fs.glob(f"{root}/*")) == {f"{root}/keep", f"{root}/old", f"{root}/gone"}
    assert fs.du(root) == 15
    assert {r: sorted(f) for r, _, f in fs.walk(root)} == {
        root: ["keep", "old"],
        f"{root}/gone": ["deep"],
    }
    with pytest.raises(FileNotFoundError):
        fs.ls(f"{root}/fresh")
    # Reads of the objects themselves are not stale.
    assert fs.exists(f"{root}/new") and not fs.exists(f"{root}/old")
    assert fs.info(f"{root}/new")["size"] == 1
    with pytest.raises(FileNotFoundError):
        fs.info(f"{root}/old")
    clock.now += 31
    assert set(fs.find(root)) == {f"{root}/keep", f"{root}/new", f"{root}/fresh/one"}
    assert set(fs.ls(root, detail=False)) == {f"{root}/keep", f"{root}/new", f"{root}/fresh"}


def test_stale_calls_counts_listing_calls(mem: str) -> None:
    fs, _ = _stale_setup(MemoryFileSystem(), mem, stale_calls=2)
    assert fs.find(mem) == []  # "keep" too: no listing happened since it was written
    with pytest.raises(FileNotFoundError):  # a prefix with nothing listable is not there yet
        fs.ls(mem)
    fs.exists(f"{mem}/new")  # not a listing call: does not count
    assert set(fs.find(mem)) == {f"{mem}/keep", f"{mem}/new", f"{mem}/fresh/one"}


def test_a_file_created_and_deleted_within_the_window_is_never_listed(mem: str) -> None:
    fs = FaultyFileSystem(MemoryFileSystem(), stale_calls=5)
    fs.pipe_file(f"{mem}/blip", b"1")
    fs.rm_file(f"{mem}/blip")
    fs.pipe_file(f"{mem}/other", b"1")
    assert fs.find(mem) == []


# -- call log, passthrough, plumbing ------------------------------------------------------------


def test_call_log_records_every_outer_call_in_order(mem: str) -> None:
    fs = FaultyFileSystem(MemoryFileSystem(), fail_on=[FailOn(method="cat_file")])
    fs.pipe_file(f"{mem}/a", b"1")
    fs.cp_file(f"{mem}/a", f"{mem}/b")
    with pytest.raises(OSError):
        fs.cat_file(f"{mem}/b")
    with pytest.raises(FileNotFoundError):
        fs.info(f"{mem}/missing")
    fs.glob(f"{mem}/*")  # runs find/exists internally: logged once
    fs.mv(f"{mem}/b", f"{mem}/c")
    fs.invalidate_cache()
    assert [(c.method, c.mutating, c.outcome) for c in fs.calls] == [
        ("pipe_file", True, "ok"),
        ("cp_file", True, "ok"),
        ("cat_file", False, "transient"),
        ("info", False, "error"),
        ("glob", False, "ok"),
        ("mv", True, "ok"),
        ("invalidate_cache", False, "ok"),
    ]
    assert fs.calls[1].paths == (f"{mem}/a", f"{mem}/b")
    assert fs.mutations() == [
        ("pipe_file", f"{mem}/a"),
        ("cp_file", f"{mem}/b"),
        ("mv", f"{mem}/b"),
        ("mv", f"{mem}/c"),
    ]
    assert fs.call_counts["cat_file"] == 1


def test_protocol_and_path_handling_pass_through(mem: str) -> None:
    inner = MemoryFileSystem()
    fs = FaultyFileSystem(inner)
    assert fs.protocol == inner.protocol == "memory"
    assert fs._strip_protocol("memory://x/y") == inner._strip_protocol("memory://x/y") == "/x/y"
    assert fs.unstrip_protocol("/x/y") == "memory:///x/y"
    assert FaultyFileSystem.protocol == "faulty"
    fs.pipe_file(f"memory://{mem}/u", b"1")
    assert fs.calls[-1].paths == (f"{mem}/u",)
    assert fs.cat_file(f"memory://{mem}/u") == b"1"
    s3fs = pytest.importorskip("s3fs")
    s3 = FaultyFileSystem(s3fs.S3FileSystem(anon=True, skip_instance_cache=True))
    assert s3.protocol == ("s3", "s3a")
    assert s3._strip_protocol("s3://b/k/") == "b/k"
    assert s3.unstrip_protocol("b/k") == "s3://b/k"


def test_not_cached_local_detection_and_pickling(tmp_path: Path, mem: str) -> None:
    local = LocalFileSystem()
    a, b = FaultyFileSystem(local, seed=1), FaultyFileSystem(local, seed=1)
    assert a is not b and a != b
    assert a.is_local and innermost(FaultyFileSystem(a)) is local
    assert not FaultyFileSystem(MemoryFileSystem()).is_local
    a.makedirs(str(tmp_path / "d"), exist_ok=True)
    assert a.mutating_calls == 1  # directories are real on local disk
    m = FaultyFileSystem(MemoryFileSystem(), transient_rate=1.0)
    m.makedirs(f"{mem}/whatever", exist_ok=True)  # no request on object stores: not faulted
    assert m.mutating_calls == 0
    copy = pickle.loads(pickle.dumps(FaultyFileSystem(local, seed=4, transient_rate=0.3)))
    assert (copy.seed, copy.transient_rate, copy.calls) == (4, 0.3, [])
    assert isinstance(copy.inner, LocalFileSystem)


def test_latency_is_seeded_and_sleeps_once_per_call(mem: str) -> None:
    def run() -> list[float]:
        slept: list[float] = []
        fs = FaultyFileSystem(MemoryFileSystem(), latency=(0.1, 0.2), sleep=slept.append)
        fs.pipe_file(f"{mem}/a", b"1")
        fs.glob(f"{mem}/*")
        fs.cat_file(f"{mem}/a")
        return slept

    first = run()
    assert len(first) == 3 and all(0.1 <= s <= 0.2 for s in first)
    assert run() == first


# -- every backend of the shared fixture ---------------------------------------------------------


def test_faults_over_every_backend(backend: Any) -> None:
    inner, root = backend.fs, backend.root
    if backend.name == "local":
        inner.makedirs(root, exist_ok=True)
    clock = FakeClock()
    fs = FaultyFileSystem(
        inner,
        clock=clock,
        stale_seconds=10,
        fail_on=[
            FailOn(method="pipe_file", nth=1),
            FailOn(method="pipe_file", nth=2, after_mutation=True),
        ],
    )
    assert fs.protocol == inner.protocol
    assert fs._strip_protocol(backend.base) == inner._strip_protocol(backend.base) == root
    path: Callable[[str], str] = lambda name: f"{root}/{name}"  # noqa: E731
    with pytest.raises(OSError):
        fs.pipe_file(path("a"), b"aaa", mode="create")
    assert not inner.exists(path("a"))
    with pytest.raises(OSError):
        fs.pipe_file(path("a"), b"aaa", mode="create")
    assert inner.cat_file(path("a")) == b"aaa"
    with pytest.raises(FileExistsError):
        fs.pipe_file(path("a"), b"aaa", mode="create")
    assert fs.find(root) == []  # the new object is not listed yet
    assert fs.exists(path("a"))
    clock.now += 11
    assert fs.find(root) == [path("a")]
    fs.rm_file(path("a"))
    assert fs.find(root, detail=True)[path("a")]["size"] == 3
    fs.crash_after = fs.mutating_calls + 1
    with pytest.raises(InjectedCrash):
        fs.pipe_file(path("b"), b"b")
    assert not inner.exists(path("b"))
