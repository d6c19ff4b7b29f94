"""``python -m benchmarks.resume_bench``: resuming a publish killed half way (SIGKILL).

A 512 MiB SavedModel-shaped tree (128 variable shards of 4 MiB) is published to each store
(moto S3, fake-gcs-server) three ways, in one run: a full publish (timed); a publish in a
child process that is SIGKILLed once its progress passes ~50 % of the bytes; then the same
publish again in this process, which resumes (timed; its uploads counted through a
pass-through FaultyFileSystem).

Targets (issue 13): bytes uploaded by the resume <= 55 % of the total; resumed publish time
<= 0.6 x the full publish. Also timed: a raw server-side copy of the committed tree, the work
every staged publish (resumed or not) does for every file, which gives the server's floor.
Writes benchmarks/results/resume.md (and prints it).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .backends import open_store
from .env import REPO, RESULTS_DIR, machine_info

MiB = 1 << 20
CHILD = """
import json, sys, threading
from cloud_exporter import publish
done, lock = 0, threading.Lock()
def progress(n):
    global done
    with lock:  # progress comes from several transfer threads
        done += n
        print(done, flush=True)
publish(sys.argv[1], sys.argv[2], storage_options=json.loads(sys.argv[3]), progress=progress)
"""


def log(message: str) -> None:
    print(f"[resume-bench] {message}", file=sys.stderr, flush=True)


def make_tree(root: str, shards: int, shard_bytes: int) -> int:
    os.makedirs(os.path.join(root, "variables"), exist_ok=True)
    Path(root, "saved_model.pb").write_bytes(os.urandom(64 << 10))
    Path(root, "variables", "variables.index").write_bytes(os.urandom(16 << 10))
    for i in range(shards):
        name = f"variables.data-{i:05d}-of-{shards:05d}"
        Path(root, "variables", name).write_bytes(os.urandom(shard_bytes))
    return sum(p.stat().st_size for p in Path(root).rglob("*") if p.is_file())


def kill_half_way(source: str, base: str, options: dict, total: int, at: float) -> float:
    """Run the publish in a child; SIGKILL it once its progress passes ``at`` of ``total``."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    argv = [sys.executable, "-c", CHILD, source, base, json.dumps(options)]
    child = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=env)
    assert child.stdout is not None
    done = 0
    for line in child.stdout:
        done = int(line)
        if done >= at * total:
            os.kill(child.pid, signal.SIGKILL)
            break
    child.wait()
    return done / total


def uploaded_bytes(calls: list, source: str) -> int:
    """Bytes of model files sent from the client (put_file, or pipe_file for small files) into
    any staging directory; claims, upload records and markers are not model files."""
    sizes = {
        p.relative_to(source).as_posix(): p.stat().st_size
        for p in Path(source).rglob("*")
        if p.is_file()
    }
    total = 0
    for c in calls:
        if c.method not in ("put_file", "pipe_file") or not c.applied or not c.targets:
            continue
        _, sep, rest = c.targets[-1].partition("/.cloud-exporter-staging/")
        relpath = rest.partition("/")[2] if sep else ""
        total += sizes.get(relpath, 0)
    return total


def run_one(backend: str, source: str, total: int, at: float, workdir: str) -> dict:
    from cloud_exporter import publish
    from cloud_exporter.testing import FaultyFileSystem

    with open_store(backend, workdir) as store:
        opts = store.storage_options
        start = time.perf_counter()
        info = publish(source, store.uri("full"), storage_options=opts)
        full = time.perf_counter() - start
        # The copy every staged publish, resumed or not, makes of every file: timed alone.
        fs = store.new_fs()
        start = time.perf_counter()
        fs.copy(store.path("full", str(info.version)), store.path("copy"), recursive=True)
        copy = time.perf_counter() - start
        store.clear("full")
        store.clear("copy")
        log(f"{backend}: full publish {full:.1f} s, server-side copy of the tree {copy:.1f} s")
        killed_at = kill_half_way(source, store.uri("resumed"), opts, total, at)
        log(f"{backend}: killed at {killed_at:.0%} of the bytes")
        counting = FaultyFileSystem(store.new_fs())
        start = time.perf_counter()
        publish(source, store.uri("resumed"), filesystem=counting)
        resumed = time.perf_counter() - start
        log(f"{backend}: resumed publish {resumed:.1f} s")
        uploaded = uploaded_bytes(counting.calls, source)
        store.clear("resumed")
    return {
        "backend": backend,
        "full": full,
        "resumed": resumed,
        "copy": copy,
        "uploaded": uploaded,
        "killed_at": killed_at,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.resume_bench")
    parser.add_argument("--shards", type=int, default=128)
    parser.add_argument("--shard-mib", type=int, default=4)
    parser.add_argument("--at", type=float, default=0.5, help="kill point (fraction of bytes)")
    parser.add_argument("--backends", default="s3,gcs", help="object stores: s3,gcs")
    args = parser.parse_args(argv)

    workdir = tempfile.mkdtemp(prefix="cloud-exporter-resume-bench-")
    try:
        source = os.path.join(workdir, "model")
        total = make_tree(source, args.shards, args.shard_mib * MiB)
        log(f"tree: {total / MiB:.0f} MiB in {args.shards + 2} files")
        results = [
            run_one(b, source, total, args.at, workdir) for b in args.backends.split(",") if b
        ]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    info = machine_info()
    lines = [
        "# Resuming a publish killed half way",
        "",
        f"{total / MiB:.0f} MiB in {args.shards + 2} files to the emulators (loopback); the first "
        "attempt was SIGKILLed once its progress passed "
        f"{args.at:.0%} of the bytes. Machine: {info.get('cpu', '?')}, {os.cpu_count()} cores, "
        f"load at start {info.get('load_start', '?')}.",
        "",
        "The floor is what a resume cannot avoid on that server: the uploaded share of the full",
        "publish's upload time plus the server-side copy of every file (timed alone, raw",
        "`fs.copy`), over the full publish.",
        "",
        "| store | killed at | uploaded by the resume (<= 55 %) | resumed / full time (<= 0.6) "
        "| copy alone / full | floor |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        share, ratio = r["uploaded"] / total, r["resumed"] / r["full"]
        copied = min(r["copy"] / r["full"], 1.0)
        floor = share * (1 - copied) + copied
        lines.append(
            f"| {r['backend']} | {r['killed_at']:.0%} | {r['uploaded'] / MiB:.0f} MiB = "
            f"{share:.1%}: {'PASS' if share <= 0.55 else 'MISS'} | {r['resumed']:.1f} s / "
            f"{r['full']:.1f} s = {ratio:.2f}: {'PASS' if ratio <= 0.6 else 'MISS'} "
            f"| {copied:.2f} | {floor:.2f} |"
        )
    text = "\n".join(lines) + "\n"
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "resume.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
