"""``python -m benchmarks.resume_bench``: resuming a publish killed half way (SIGKILL).

A 512 MiB SavedModel-shaped tree (128 variable shards of 4 MiB) is published to the moto S3
server three ways, in one run: a full publish (timed); a publish in a child process that is
SIGKILLed once its progress passes ~50 % of the bytes; then the same publish again in this
process, which resumes (timed; its uploads counted through a pass-through FaultyFileSystem).

Targets (issue 13): bytes uploaded by the resume <= 55 % of the total; resumed publish time
<= 0.6 x the full publish. Writes benchmarks/results/resume.md (and prints it).
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.resume_bench")
    parser.add_argument("--shards", type=int, default=128)
    parser.add_argument("--shard-mib", type=int, default=4)
    parser.add_argument("--at", type=float, default=0.5, help="kill point (fraction of bytes)")
    args = parser.parse_args(argv)

    from cloud_exporter import publish
    from cloud_exporter.testing import FaultyFileSystem

    workdir = tempfile.mkdtemp(prefix="cloud-exporter-resume-bench-")
    try:
        source = os.path.join(workdir, "model")
        total = make_tree(source, args.shards, args.shard_mib * MiB)
        log(f"tree: {total / MiB:.0f} MiB in {args.shards + 2} files")
        with open_store("s3", workdir) as store:
            opts = store.storage_options
            start = time.perf_counter()
            publish(source, store.uri("full"), storage_options=opts)
            full = time.perf_counter() - start
            store.clear("full")
            log(f"full publish: {full:.1f} s")
            killed_at = kill_half_way(source, store.uri("resumed"), opts, total, args.at)
            log(f"killed at {killed_at:.0%} of the bytes")
            counting = FaultyFileSystem(store.new_fs())
            start = time.perf_counter()
            publish(source, store.uri("resumed"), filesystem=counting)
            resumed = time.perf_counter() - start
            uploaded = sum(
                os.path.getsize(c.paths[0])
                for c in counting.calls
                if c.method == "put_file" and c.applied
            )
            store.clear("resumed")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    share, ratio = uploaded / total, resumed / full
    info = machine_info()
    lines = [
        "# Resuming a publish killed half way",
        "",
        f"{total / MiB:.0f} MiB in {args.shards + 2} files to the moto S3 server (loopback); the "
        f"first attempt was SIGKILLed at {killed_at:.0%} of its bytes (progress as reported).",
        f"Machine: {info.get('cpu', '?')}, {os.cpu_count()} cores, load at start "
        f"{info.get('load_start', '?')}.",
        "",
        "| measure | value | target |",
        "|---|---|---|",
        f"| bytes uploaded by the resumed publish | {uploaded / MiB:.0f} MiB = {share:.1%} of the "
        f"total | <= 55 %: {'PASS' if share <= 0.55 else 'MISS'} |",
        f"| resumed publish time / full publish time | {resumed:.1f} s / {full:.1f} s = "
        f"{ratio:.2f} | <= 0.6: {'PASS' if ratio <= 0.6 else 'MISS'} |",
    ]
    text = "\n".join(lines) + "\n"
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "resume.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
