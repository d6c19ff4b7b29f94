"""``python -m benchmarks.sync_bench``: sync of one export vs raw ``fs.get`` of the same tree.

The tree (default profile: 225 MiB, 208 files) is published once per store (untimed). Each
repetition then runs, in an order rotated per repetition, a raw recursive ``fs.get`` of the version
directory and a ``sync_exports`` into a fresh local directory (download, CRC32C verification,
rename); both targets are deleted before the next repetition (untimed). The ratio sync / get is
taken within each repetition, so machine load affects both sides alike. One untimed warm-up
repetition comes first and checks that both copies hold every file.

    python -m benchmarks.sync_bench [--quick] [--reps N] [--backends s3,gcs,local]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence

from cloud_exporter import publish, sync_exports

from .backends import BACKENDS, Store, open_store
from .stats import Summary
from .workloads import PROFILES, make_tree, tree_stats

LIMIT = 1.10  # issue 16: sync <= 1.10x raw fs.get


def run_sync(store: Store, src: str, reps: int, workdir: str, log: Callable[[str], None]) -> dict:
    """Time raw get and sync on ``store``; return times and per-repetition ratios."""
    files, nbytes = tree_stats(src)
    info = publish(src, store.uri("sync-bench"), filesystem=store.fs)
    remote = store.fs._strip_protocol(info.uri)
    times: dict[str, list[float]] = {"raw get": [], "sync": []}

    def raw_get(target: str) -> None:
        store.fs.get(remote.rstrip("/") + "/", target + "/", recursive=True)

    def sync(target: str) -> None:
        sync_exports(store.uri("sync-bench"), target, filesystem=store.fs)

    ops = [("raw get", raw_get), ("sync", sync)]
    for rep in range(-1, reps):
        shift = max(rep, 0) % len(ops)
        for name, fn in ops[shift:] + ops[:shift]:
            target = os.path.join(workdir, f"{store.name}-{name.replace(' ', '-')}")
            gc.collect()
            os.sync()
            start = time.perf_counter()
            fn(target)
            elapsed = time.perf_counter() - start
            got = sum(len(names) for _, _, names in os.walk(target))
            want = files + (1 if name == "raw get" else 2)  # + marker (+ sync record)
            if rep < 0 and got != want:
                raise RuntimeError(f"benchmark self-check: {name} wrote {got} files, not {want}")
            if rep >= 0:
                times[name].append(elapsed)
            shutil.rmtree(target, ignore_errors=True)
        if rep >= 0:
            log(
                f"  {store.name} rep {rep + 1}/{reps}: "
                + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items())
            )
    store.clear("sync-bench")
    ratios = [s / g for s, g in zip(times["sync"], times["raw get"], strict=True)]
    return {
        "backend": store.name,
        "files": files,
        "bytes": nbytes,
        "times": times,
        "ratios": ratios,
    }


def render(results: list[dict]) -> str:
    lines = [
        "| store | files | MiB | raw fs.get (s) | sync (s) | sync / get (median, range) | "
        f"<= {LIMIT:.2f}x |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        get, syn, ratio = (
            Summary.of(x) for x in (r["times"]["raw get"], r["times"]["sync"], r["ratios"])
        )
        lines.append(
            f"| {r['backend']} | {r['files']} | {r['bytes'] / (1 << 20):.0f} | {get.fmt()} | "
            f"{syn.fmt()} | {ratio.fmt()}x ({ratio.spread()}) | "
            f"{'PASS' if ratio.median <= LIMIT else 'MISS'} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sync_bench")
    parser.add_argument("--quick", action="store_true", help="the 48 MiB tree, 3 repetitions")
    parser.add_argument("--reps", type=int, help="repetitions (default: from the profile)")
    parser.add_argument("--backends", default=",".join(BACKENDS), help="s3,gcs,local")
    parser.add_argument("--json", action="store_true", help="print JSON instead of markdown")
    args = parser.parse_args(argv)
    profile = PROFILES["quick" if args.quick else "default"]
    reps = args.reps or profile.reps
    start = time.monotonic()

    def log(message: str) -> None:
        print(f"[{time.monotonic() - start:6.1f}s] {message}", file=sys.stderr, flush=True)

    workdir = tempfile.mkdtemp(prefix="cloud-exporter-sync-bench-")
    try:
        src = make_tree(os.path.join(workdir, "tree"), profile.tree)
        log(f"tree: {profile.tree.describe()}")
        results = []
        for name in [b for b in args.backends.split(",") if b]:
            with open_store(name, workdir) as store:
                results.append(run_sync(store, src, reps, workdir, log))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(results, indent=2) if args.json else render(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
