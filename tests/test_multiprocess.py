"""Concurrency across processes: publishers with ``keep=3`` and pruners in a loop, at once.

Against the moto S3 server and fake-gcs-server: 8 processes each publish 10 exports with
``keep=3`` while 2 more processes prune (``keep=3``) in a loop. On local disk: 2 processes race,
each publishing 5 exports with ``keep=3``. No process may raise; every version is distinct and each
publisher's versions only go up (no number is handed out twice); at
the end (after a last prune) exactly the 3 newest remain, verify deeply, hold what their
publisher wrote, and nothing else is left.

Meanwhile a reader process watches as the two kinds of reader would: like TF Serving, it lists the
base and checks that every integer directory holding ``saved_model.pb`` holds every other file of
the model too; like our readers, it verifies ``latest_export`` deeply, which must pass or find the
export pruned meanwhile (``ExportNotFoundError``), never anything else.

Processes are started with the 'spawn' context (forking a process that runs s3fs's event-loop
thread is unsafe); each child builds its own filesystem from the picklable storage options.
Figures are printed (``-s``).
"""

from __future__ import annotations

import multiprocessing
import queue
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from invariants import check_clean
from savedmodels import fake_saved_model

import cloud_exporter as ce

pytestmark = pytest.mark.slow

KEEP = 3
START_TIMEOUT_S = 120
RUN_TIMEOUT_S = 300
PRUNE_PAUSE_S = 0.2


@dataclass(frozen=True)
class Job:
    """What one child process does; picklable."""

    role: str  # "publisher", "pruner" or "reader"
    index: int
    protocol: str
    options: dict[str, Any]
    base: str
    source: str = ""
    count: int = 0


def child_filesystem(protocol: str, options: dict[str, Any]) -> Any:
    """A filesystem built in the child (which inherits servers.py's environment)."""
    import fsspec

    return fsspec.filesystem(protocol, skip_instance_cache=True, **options)


def run_job(job: Job, start: Any, stop: Any, results: Any) -> None:
    """Child entry point: wait for everyone, do the job, report (never raise)."""
    try:
        fs = child_filesystem(job.protocol, job.options)
        start.wait(START_TIMEOUT_S)
        work = {"publisher": publish_all, "pruner": prune_loop, "reader": read_loop}[job.role]
        outcome = work(job, fs) if job.role == "publisher" else work(job, fs, stop)
        results.put((job.role, job.index, outcome, None))
    except BaseException:  # reported to the parent, which fails the test with it
        results.put((job.role, job.index, None, traceback.format_exc()))


def publish_all(job: Job, fs: Any) -> list[int]:
    versions = []
    for n in range(job.count):
        meta = {"publisher": job.index, "n": n}
        versions.append(
            ce.publish(job.source, job.base, metadata=meta, keep=KEEP, filesystem=fs).version
        )
    return versions


def prune_loop(job: Job, fs: Any, stop: Any) -> int:
    rounds = 0
    while not stop.is_set():
        ce.prune(job.base, keep=KEEP, filesystem=fs)
        rounds += 1
        time.sleep(PRUNE_PAUSE_S)
    return rounds


MODEL_FILES = frozenset(
    {
        "saved_model.pb",
        "fingerprint.pb",
        "assets/vocab.txt",
        "variables/variables.index",
        "variables/variables.data-00000-of-00001",
    }
)


def read_loop(job: Job, fs: Any, stop: Any) -> dict[str, int]:
    """Watch the base as TF Serving and as our readers do; raise on anything partial."""
    seen = {"polls": 0, "servable": 0, "verified": 0, "pruned_while_verifying": 0}
    root = fs._strip_protocol(job.base).rstrip("/")
    while not stop.is_set():
        fs.invalidate_cache()
        try:
            found = fs.find(root)
        except FileNotFoundError:
            found = []
        by_version: dict[str, set[str]] = {}
        for path in found:
            head, _, rest = path[len(root) + 1 :].partition("/")
            if head.isdigit() and rest:
                by_version.setdefault(head, set()).add(rest)
        for version, files in by_version.items():
            if "saved_model.pb" in files:
                missing = MODEL_FILES - files
                # A listing that walks folder by folder (local disk) can cross a prune: it is a
                # violation only if saved_model.pb is still there after the files went missing.
                if missing and not fs.exists(f"{root}/{version}/saved_model.pb"):
                    continue
                assert not missing, f"TF Serving could load {version} without {sorted(missing)}"
                seen["servable"] += 1
        seen["polls"] += 1
        latest = ce.latest_export(job.base, filesystem=fs)
        if latest is not None:
            try:
                ce.verify_export(job.base, latest.version, deep=True, filesystem=fs)
                seen["verified"] += 1
            except ce.ExportNotFoundError:
                seen["pruned_while_verifying"] += 1
    return seen


@dataclass
class Outcome:
    published: dict[int, tuple[int, int]]  # version -> (publisher, n)
    prune_rounds: int
    seconds: float
    reads: dict[str, int]


def run_processes(jobs: list[Job]) -> Outcome:
    """Start every job in its own spawned process, stop the pruners when the publishers are
    done, and return what they reported; any child error fails the test."""
    ctx = multiprocessing.get_context("spawn")
    start, stop, results = ctx.Barrier(len(jobs)), ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=run_job, args=(job, start, stop, results)) for job in jobs]
    for proc in procs:
        proc.start()
    started = time.monotonic()
    try:
        reports = collect(jobs, stop, results)
    finally:
        for proc in procs:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()
    errors = [f"{role} {index}:\n{error}" for role, index, _, error in reports if error]
    assert not errors, "\n".join(errors)
    published: dict[int, tuple[int, int]] = {}
    for role, index, outcome, _ in reports:
        if role == "publisher":  # each next claim tops every version listed, its own included
            assert outcome == sorted(set(outcome)), f"publisher {index} went back: {outcome}"
            for n, version in enumerate(outcome):
                assert version not in published, f"version {version} published twice"
                published[version] = (index, n)
    rounds = sum(o for role, _, o, _ in reports if role == "pruner")
    reads = next((o for role, _, o, _ in reports if role == "reader"), {})
    return Outcome(published, rounds, time.monotonic() - started, reads)


def collect(jobs: list[Job], stop: Any, results: Any) -> list[tuple]:
    publishers = sum(job.role == "publisher" for job in jobs)
    reports: list[tuple] = []
    deadline = time.monotonic() + START_TIMEOUT_S + RUN_TIMEOUT_S
    while len(reports) < len(jobs):
        if sum(r[0] == "publisher" for r in reports) == publishers or any(r[3] for r in reports):
            stop.set()
        try:
            reports.append(results.get(timeout=max(0.1, deadline - time.monotonic())))
        except queue.Empty:
            stop.set()
            raise AssertionError(f"only {len(reports)} of {len(jobs)} processes reported") from None
    return reports


def check_final(backend: Any, outcome: Outcome, publishers: int, count: int) -> None:
    assert len(outcome.published) == publishers * count  # every version distinct
    newest = sorted(outcome.published)[-KEEP:]
    fs = backend.new_fs()
    for _ in range(2):  # the last prune of all; the second drops its journal
        ce.prune(backend.base, keep=KEEP, grace_seconds=0, filesystem=fs)
    exports = check_clean(fs, backend.base, newest, local=backend.name == "local")
    for version, info in exports.items():
        writer, n = outcome.published[version]
        assert info.metadata == {"publisher": writer, "n": n}


def make_jobs(
    backend: Any, tmp_path: Path, publishers: int, count: int, pruners: int, readers: int = 1
) -> list[Job]:
    jobs = [
        Job(
            "publisher",
            i,
            backend.protocol,
            backend.storage_options,
            backend.base,
            str(fake_saved_model(tmp_path / f"model{i}", seed=100 + i)),
            count,
        )
        for i in range(publishers)
    ]
    jobs += [
        Job("pruner", i, backend.protocol, backend.storage_options, backend.base)
        for i in range(pruners)
    ]
    jobs += [
        Job("reader", i, backend.protocol, backend.storage_options, backend.base)
        for i in range(readers)
    ]
    return jobs


def test_publishers_and_pruners_in_processes(server_backend, tmp_path):
    publishers, count = 8, 10
    outcome = run_processes(make_jobs(server_backend, tmp_path, publishers, count, pruners=2))
    check_final(server_backend, outcome, publishers, count)
    print(
        f"\nFIGURES multiprocess {server_backend.name}: {len(outcome.published)} exports by "
        f"{publishers} processes, {outcome.prune_rounds} prune rounds by 2, "
        f"{outcome.seconds:.1f} s; reader: {outcome.reads}"
    )
    assert outcome.prune_rounds >= 2  # the pruners really ran alongside
    assert outcome.reads["polls"] >= 2 and outcome.reads["verified"] >= 1  # and the reader


@pytest.mark.parametrize("backend", ["local"], indirect=True)
def test_two_processes_race_on_local_disk(backend, tmp_path):
    publishers, count = 2, 5
    outcome = run_processes(make_jobs(backend, tmp_path, publishers, count, pruners=0))
    check_final(backend, outcome, publishers, count)
    print(
        f"\nFIGURES multiprocess local: {len(outcome.published)} exports, {outcome.seconds:.1f} s"
        f"; reader: {outcome.reads}"
    )
    assert outcome.reads["polls"] >= 1
