"""Crash consistency, exhaustively: crash publish and prune at every mutating call.

For each operation and backend, a clean run through ``FaultyFileSystem`` counts the mutating
calls K; then, for k = 1..K, the operation runs on a fresh base with ``crash_after=k`` (the k-th
mutation and everything after it never happen). After each crash the invariants of
``invariants.check_state`` must hold; then the operation runs again on a non-faulty filesystem,
a prune with ``grace_seconds=0`` clears the leftovers, and ``check_clean`` must hold.

Local disk: ``LocalRename`` builds the version with ``os`` calls and renames it into place, which
``FaultyFileSystem`` cannot see. ``local_crash_points`` makes those calls crash points too
(directory creation, each file copy, the marker write, the rename, the claim, the removal of
empty directories), counted in the same sequence as the fsspec calls.

The other tests here look at the same intermediate states from other angles: a prune within
the grace period must leave every pre-commit state of a publish untouched (it may be in flight),
on local disk the version directory must appear whole at the rename, and a prune journal must
never make a later, foreign directory under a deleted version number look like ours.

Figures (K per operation and backend) are printed; run with ``-s`` to see them.
"""

from __future__ import annotations

import builtins
import contextlib
import os
import shutil
import threading
import time
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from invariants import check_clean, check_state, committed, manifest_of
from savedmodels import fake_saved_model, write_object

import cloud_exporter as ce
from cloud_exporter import commit, storage
from cloud_exporter.layout import STAGING_DIRNAME
from cloud_exporter.retention import UNMARKED_REASON
from cloud_exporter.testing import FaultyFileSystem, InjectedCrash

pytestmark = pytest.mark.slow

EXTRA_DEST = "labels/extra.json"


@dataclass
class Sources:
    """Three different models (the last published with assets.extra) and their manifests."""

    old: Path
    new: Path
    other: Path
    extra: dict[str, str]
    trees: list[dict[str, str]] = field(default_factory=list)


@pytest.fixture
def sources(tmp_path: Path) -> Sources:
    extra_file = tmp_path / "extra.json"
    extra_file.write_text('{"labels": ["cat", "dog"]}')
    made = Sources(
        old=fake_saved_model(tmp_path / "old", seed=11),
        new=fake_saved_model(tmp_path / "new", seed=12),
        other=fake_saved_model(tmp_path / "other", seed=13),
        extra={EXTRA_DEST: str(extra_file)},
    )
    made.trees = [
        manifest_of(made.new, made.extra),
        manifest_of(made.other, made.extra),
        manifest_of(made.old),
    ]
    return made


# ---------------------------------------------------------------------------------------------
# Crash points on local disk that fsspec does not see
# ---------------------------------------------------------------------------------------------
_COUNT_LOCK = threading.Lock()


def crash_point(fs: FaultyFileSystem, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` as one more mutating call of ``fs``: counted, and crashed at ``fs.crash_after``."""

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        with _COUNT_LOCK:
            if not fs.crashed:
                fs.mutating_calls += 1
                if fs.crash_after is not None and fs.mutating_calls >= fs.crash_after:
                    fs.crashed = True
            if fs.crashed:
                raise InjectedCrash(f"injected crash at {name} (crash_after={fs.crash_after})")
        return fn(*args, **kwargs)

    return wrapped


class ModuleProxy(types.SimpleNamespace):
    """Stands in for a module inside one of ours: chosen functions replaced, the rest forwarded."""

    def __init__(self, module: types.ModuleType, **replaced: Callable[..., Any]) -> None:
        super().__init__(**replaced)
        self._module = module

    def __getattr__(self, name: str) -> Any:
        return getattr(self._module, name)


_ORIGINALS = {
    "copy": commit.copy_file,
    "create": storage._local_create_exclusive,
}


@pytest.fixture
def local_crash_points(monkeypatch: pytest.MonkeyPatch) -> Callable[[FaultyFileSystem], None]:
    """Route LocalRename's and the local cleanup's os calls through ``fs``'s crash counter.

    Each call re-installs the points for a new ``fs``, always around the original functions.
    """

    def install(fs: FaultyFileSystem) -> None:
        def point(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
            return crash_point(fs, name, fn)

        makedirs, rename = point("makedirs", os.makedirs), point("rename", os.rename)
        monkeypatch.setattr(commit, "os", ModuleProxy(os, makedirs=makedirs, rename=rename))
        monkeypatch.setattr(commit, "copy_file", point("copy", _ORIGINALS["copy"]))
        monkeypatch.setattr(commit, "open", point("marker write", builtins.open), raising=False)
        monkeypatch.setattr(
            storage, "_local_create_exclusive", point("create", _ORIGINALS["create"])
        )
        monkeypatch.setattr(storage, "os", ModuleProxy(os, rmdir=point("rmdir", os.rmdir)))
        rmtree = point("rmtree", shutil.rmtree)
        monkeypatch.setattr(storage, "shutil", ModuleProxy(shutil, rmtree=rmtree))

    return install


def no_crash_points(fs: FaultyFileSystem) -> None:
    """Object stores and memory: every mutation already goes through the filesystem."""


# ---------------------------------------------------------------------------------------------
# The operations and their expectations
# ---------------------------------------------------------------------------------------------
@dataclass
class Env:
    """What one sweep works with: the store, a checker filesystem, sources, crash points."""

    backend: Any
    src: Sources
    install: Callable[[FaultyFileSystem], None]
    inner: Any = None
    checker: Any = None
    marker_call: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.inner, self.checker = self.backend.new_fs(), self.backend.new_fs()

    def faulty(self, crash_after: int | None = None) -> FaultyFileSystem:
        """A wrapper over the store, installed as the one the local crash points count for."""
        fs = FaultyFileSystem(self.inner, crash_after=crash_after)
        self.install(fs)
        return fs

    def leave_unmarked(self, base: str, source: Path, mode: str) -> None:
        """Leftovers of a publish that died at its commit (the marker write; on local disk the
        rename): on object stores a complete version directory without a marker."""
        if mode not in self.marker_call:
            self.marker_call[mode] = self.last_uncommitted_crash(source, mode)
        with pytest.raises(InjectedCrash):
            publish_extra(self, source, base, mode, self.faulty(self.marker_call[mode]))
        self.faulty()

    def last_uncommitted_crash(self, source: Path, mode: str) -> int:
        """The highest k at which a crash leaves the publish uncommitted (found on scratch)."""
        counting = self.faulty()
        publish_extra(self, source, self.backend.join(f"count-{mode}"), mode, counting)
        for k in range(counting.mutating_calls, 0, -1):
            scratch = self.backend.join(f"count-{mode}-{k}")
            with contextlib.suppress(InjectedCrash):
                publish_extra(self, source, scratch, mode, self.faulty(k))
            if not committed(self.checker, scratch):
                return k
        raise AssertionError("no crash point leaves the publish uncommitted")


def publish_extra(env: Env, source: Path, base: str, mode: str, fs: Any) -> ce.ExportInfo:
    return ce.publish(
        source, base, assets_extra=env.src.extra, mode=mode, filesystem=fs, concurrency=1
    )


@dataclass
class Op:
    """One operation to crash. ``recover`` re-runs it on a healthy filesystem and returns the
    versions it adds; ``keep`` is the retention the final state must show (None: all)."""

    name: str
    setup: Callable[[Env, str], None]
    run: Callable[[Env, str, Any], Any]
    recover: Callable[[Env, str], set[int]]
    may_lose: frozenset[int] = frozenset()
    keep: int | None = None


def publish_op(mode: str) -> Op:
    def setup(env: Env, base: str) -> None:
        ce.publish(env.src.old, base, filesystem=env.inner)

    def run(env: Env, base: str, fs: Any) -> Any:
        return publish_extra(env, env.src.new, base, mode, fs)

    def recover(env: Env, base: str) -> set[int]:
        return {publish_extra(env, env.src.other, base, mode, env.inner).version}

    return Op(f"publish-{mode}", setup, run, recover)


PRUNE_KEEP = 2


def prune_setup(env: Env, base: str) -> None:
    """Committed exports 1, 2, 3 and the leftovers of a staged and a direct publish that died
    at their marker write (on object stores: unmarked version dirs holding saved_model.pb)."""
    for version in (1, 2, 3):
        ce.publish(env.src.old, base, version=version, filesystem=env.inner)
    env.leave_unmarked(base, env.src.new, "staged")
    env.leave_unmarked(base, env.src.other, "direct")


def prune_run(env: Env, base: str, fs: Any) -> Any:
    return ce.prune(base, keep=PRUNE_KEEP, grace_seconds=0, filesystem=fs)


def prune_recover(env: Env, base: str) -> set[int]:
    prune_run(env, base, env.inner)
    return set()


OPS = {
    "publish-staged": publish_op("staged"),
    "publish-direct": publish_op("direct"),
    "prune": Op("prune", prune_setup, prune_run, prune_recover, frozenset({1}), PRUNE_KEEP),
}


# ---------------------------------------------------------------------------------------------
# The sweep
# ---------------------------------------------------------------------------------------------
def run_to_crash(op: Op, env: Env, base: str, fs: FaultyFileSystem) -> str:
    """Run ``op`` into its injected crash: 'raised', or 'swallowed' when code past the crash
    point caught it (publish's best-effort cleanup after the commit does)."""
    try:
        op.run(env, base, fs)
    except InjectedCrash:
        return "raised"
    return "swallowed"


def crash_at(op: Op, env: Env, k: int, total: int) -> str:
    """Crash ``op`` at mutating call k on a fresh base; check the state, recover, check again."""
    base = env.backend.join(f"k{k:02d}")
    context = f"{env.backend.name} {op.name}: crash at mutating call {k}/{total}"
    env.faulty()
    op.setup(env, base)
    before = committed(env.checker, base)
    fs = env.faulty(crash_after=k)
    outcome = run_to_crash(op, env, base, fs)
    assert fs.crashed, f"{context}: the crash was not reached"
    after = check_state(
        env.checker, base, before, may_lose=op.may_lose, trees=env.src.trees, context=context
    )
    if outcome == "swallowed":  # only publish's best-effort cleanup, after its commit, may
        assert op.name.startswith("publish") and len(after) == len(before) + 1, context
    env.faulty()  # the process restarts: no more crashes
    expected = op.recover(env, base) | set(after)
    if op.keep is not None:
        expected = set(sorted(expected)[-op.keep :])
    ce.prune(base, keep=op.keep, grace_seconds=0, filesystem=env.inner)  # leftovers, journals
    check_clean(env.checker, base, expected, local=env.backend.name == "local", context=context)
    return outcome


def sweep(op: Op, env: Env) -> dict[str, int]:
    """Count the mutating calls K of a clean run, then crash at each k = 1..K."""
    clean_base = env.backend.join("clean")
    env.faulty()
    op.setup(env, clean_base)
    counting = env.faulty()
    op.run(env, clean_base, counting)
    total = counting.mutating_calls
    figures = {"K": total, "raised": 0, "swallowed": 0}
    for k in range(1, total + 1):
        figures[crash_at(op, env, k, total)] += 1
    return figures


@pytest.mark.parametrize("op_name", sorted(OPS))
def test_crash_at_every_mutating_call(backend, op_name, sources, local_crash_points):
    install = local_crash_points if backend.name == "local" else no_crash_points
    figures = sweep(OPS[op_name], Env(backend, sources, install))
    print(f"\nFIGURES crash-sweep {backend.name} {op_name}: {figures}")
    files = len(sources.trees[0])
    assert figures["K"] >= (files + 3 if op_name.startswith("publish") else 4)


# ---------------------------------------------------------------------------------------------
# An interrupted publish looks like one in flight: a prune within the grace leaves it alone.
# Version numbers a prune deleted may be written again, by us or by another tool.
# ---------------------------------------------------------------------------------------------
def snapshot(fs: Any, root: str) -> dict[str, bytes | None]:
    """Every object under ``root`` with its bytes (prune journals excepted); on local disk
    every directory too (None), as a publish in flight needs the ones it created."""
    fs.invalidate_cache()
    found = fs.find(root) if fs.exists(root) else []
    state: dict[str, bytes | None] = {
        p: fs.cat_file(p) for p in found if f"{STAGING_DIRNAME}/prune-" not in p
    }
    if os.path.isdir(root):
        state.update((dirpath, None) for dirpath, _, _ in os.walk(root))
    return state


def pause_publish_then_prune(env: Env, mode: str, k: int) -> bool:
    """Pause a publish of version 5 at mutating call k, prune, and check that the paused
    publish's objects (and, on local disk, directories) survived; False once k is past the
    commit (the publish finished)."""
    base = env.backend.join(f"k{k:02d}")
    env.faulty()
    for version in (5, 6, 7):
        ce.publish(env.src.old, base, version=version, filesystem=env.inner)
    ce.prune(base, keep=2, filesystem=env.inner)  # deletes 5; its journal names 5
    paused = env.faulty(crash_after=k)
    with contextlib.suppress(InjectedCrash):
        ce.publish(env.src.new, base, version=5, mode=mode, filesystem=paused, concurrency=1)
    env.faulty()
    if 5 in committed(env.checker, base):
        return False
    root = env.backend.strip(base)
    keep_dirs = (f"{root}/6/", f"{root}/7/")
    in_flight = {
        p: d for p, d in snapshot(env.checker, root).items() if not p.startswith(keep_dirs)
    }
    ce.prune(base, keep=2, grace_seconds=3600, filesystem=env.inner)
    still = snapshot(env.checker, root)
    gone = sorted(p for p in in_flight if p not in still or still[p] != in_flight[p])
    context = f"{env.backend.name} {mode}: publish of version 5 paused at mutating call {k}"
    assert not gone, f"{context}: the prune removed {gone}"
    assert sorted(committed(env.checker, base)) == [6, 7], context
    return True


@pytest.mark.parametrize("mode", ["staged", "direct"])
@pytest.mark.parametrize("backend", ["local", "memory", "gcs"], indirect=True)
def test_prune_within_grace_never_touches_a_publish_in_flight(
    backend, mode, sources, local_crash_points
):
    """Every state of a publish before its commit survives a prune with the default grace,
    also when the publish reuses a version number an earlier prune deleted (whose journal
    still names it). The decision is the same on every object store; gcs stands for them
    here to keep the slower moto server for the sweeps."""
    env = Env(backend, sources, local_crash_points if backend.name == "local" else no_crash_points)
    paused_states = 0
    while pause_publish_then_prune(env, mode, paused_states + 2):  # from just after the claim
        paused_states += 1
    print(f"\nFIGURES in-flight {backend.name} {mode}: {paused_states} paused states")
    assert paused_states >= len(sources.trees[2])  # at least one per file


def test_local_version_appears_whole_at_the_rename(tmp_path, sources, local_crash_points):
    """On local disk a crash at any point before the rename leaves no version directory; from
    the rename on, the version is complete with its marker."""
    from fsspec.implementations.local import LocalFileSystem

    env = Env(
        types.SimpleNamespace(new_fs=LocalFileSystem, name="local"), sources, local_crash_points
    )
    counting = env.faulty()
    ce.publish(sources.new, str(tmp_path / "count"), version=9, filesystem=counting, concurrency=1)
    appeared = []
    for k in range(1, counting.mutating_calls + 1):
        base = tmp_path / f"k{k:02d}"
        fs = env.faulty(crash_after=k)
        with contextlib.suppress(InjectedCrash):
            ce.publish(sources.new, str(base), version=9, filesystem=fs, concurrency=1)
        target = base / "9"
        appeared.append(target.exists())
        if target.exists():
            ce.verify_export(str(base), 9, deep=True, filesystem=LocalFileSystem())
    assert appeared == sorted(appeared), appeared  # absent, ..., absent, then whole
    assert appeared[0] is False and appeared[-1] is True, appeared


@pytest.mark.parametrize("backend", ["local", "memory", "s3", "gcs"], indirect=True)
def test_a_prune_journal_never_claims_a_directory_written_after_it(backend, sources):
    """A finished prune leaves its journal naming the versions it deleted. A directory that
    another tool writes later under one of those numbers is not ours: no prune may touch it."""
    for version in (5, 6, 7):
        ce.publish(sources.old, backend.base, version=version, filesystem=backend.fs)
    ce.prune(backend.base, keep=2, filesystem=backend.fs)  # deletes 5; its journal names 5
    time.sleep(1.1 if backend.name == "s3" else 0.05)  # S3 keeps whole seconds of mtime
    foreign = {f"{backend.strip(backend.join('5'))}/{name}": name.encode() for name in FOREIGN}
    for path, data in foreign.items():
        write_object(backend.fs, path, data)
    report = ce.prune(backend.base, keep=2, grace_seconds=0, filesystem=backend.new_fs())
    assert report.skipped.get(5) == UNMARKED_REASON
    fs = backend.new_fs()
    assert {p: fs.cat_file(p) for p in foreign} == foreign
    assert sorted(committed(fs, backend.base)) == [6, 7]


FOREIGN = ("saved_model.pb", "variables/variables.index", "variables/variables.data-00000-of-00001")
