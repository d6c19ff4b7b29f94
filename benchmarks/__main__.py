"""``python -m benchmarks``: run the suite, print the markdown report, keep it in results/.

    python -m benchmarks               default profile (5-8 minutes on 2 cores, by load)
    python -m benchmarks --quick       smaller trees, fewer repetitions (1-2 minutes)
    python -m benchmarks --large       2 GiB+ export (needs ~15 GB free RAM for the servers)
    python -m benchmarks --update-docs also replace the report block in docs/performance.md

Progress goes to stderr; the report to stdout and benchmarks/results/latest.md (+ .json).
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from .backends import BACKENDS, open_store
from .checks import RunResults
from .env import REPO, RESULTS_DIR, load_average, machine_info
from .estimator_bench import run_estimator
from .many_bench import SIZES, run_many
from .memory import run_memory
from .report import render, write_outputs
from .reqs import run_requests
from .startup import measure_import
from .sync_bench import run_sync
from .transfer import run_local, run_object_store
from .workloads import PROFILES, TreeSpec, export_keras, make_memory_tree, make_tree

SECTIONS = ("startup", "transfer", "keras", "requests", "many", "memory", "sync", "estimator")
_START = time.monotonic()


def log(message: str) -> None:
    print(f"[{time.monotonic() - _START:6.1f}s] {message}", file=sys.stderr, flush=True)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description="cloud_exporter benchmark suite"
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="small trees, few repetitions")
    size.add_argument("--large", action="store_true", help="a 2 GiB+ export")
    parser.add_argument("--reps", type=int, help="repetitions (default: from the profile)")
    parser.add_argument("--backends", default=",".join(BACKENDS), help="s3,gcs,local")
    parser.add_argument("--skip", default="", help=f"comma list of sections: {','.join(SECTIONS)}")
    parser.add_argument("--concurrency", type=int, default=8, help="publish(concurrency=)")
    parser.add_argument(
        "--many-sizes", default=",".join(map(str, SIZES)), help="export counts of section many"
    )
    parser.add_argument("--workdir", help="where trees are built (default: a new temp dir)")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "latest.md")
    parser.add_argument(
        "--update-docs", action="store_true", help="rewrite the report block in docs/performance.md"
    )
    args = parser.parse_args(argv)
    args.backends = [b for b in args.backends.split(",") if b]
    args.skip = {s for s in args.skip.split(",") if s}
    args.many_sizes = tuple(int(n) for n in args.many_sizes.split(",") if n)
    for name in args.backends:
        if name not in BACKENDS:
            parser.error(f"unknown backend {name!r}; choose from {','.join(BACKENDS)}")
    for name in args.skip:
        if name not in SECTIONS:
            parser.error(f"unknown section {name!r}; choose from {','.join(SECTIONS)}")
    return args


def run(args: argparse.Namespace, workdir: str) -> RunResults:
    profile = PROFILES["quick" if args.quick else "large" if args.large else "default"]
    reps = args.reps or profile.reps
    command = "python -m benchmarks " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    results = RunResults(profile.name, command.strip(), machine_info(), args.concurrency)
    want = [s for s in SECTIONS if s not in args.skip]

    log(f"profile {profile.name}: building workloads in {workdir}")
    synthetic = ""
    if "transfer" in want or "requests" in want or "sync" in want:
        synthetic = make_tree(os.path.join(workdir, f"synthetic-{profile.name}"), profile.tree)
        results.workloads["synthetic"] = profile.tree.describe()
    warm = make_tree(os.path.join(workdir, "warm"), TreeSpec(64 << 10, 0, 0, 2, 1 << 10))
    workloads = [("synthetic", synthetic, reps)] if "transfer" in want else []
    if "keras" in want and "transfer" in want:
        try:
            keras_dir = export_keras(os.path.join(workdir, "keras-export"))
            workloads.append(("keras", keras_dir, args.reps or profile.keras_reps))
            results.workloads["keras"] = "Keras 3 MLP exported with model.export (4 files)"
        except (RuntimeError, OSError) as exc:
            results.notes.append(f"Keras workload skipped: {exc}")
    memory_tree = None
    if "memory" in want:
        shard = profile.memory_shard_bytes
        memory_tree = make_memory_tree(os.path.join(workdir, f"memory-{shard >> 20}"), shard)
        results.workloads["memory"] = f"one {shard >> 20} MiB shard + 11 small files"

    if "startup" in want:
        log("import time of cloud_exporter")
        results.imports = measure_import()
    for backend in args.backends:
        log(f"{backend}: starting")
        with open_store(backend, workdir) as store:
            if workloads:
                for name, src, n in workloads:
                    runner = run_local if store.is_local else run_object_store
                    n = (args.reps or profile.local_reps) if store.is_local else n
                    results.timings.append(runner(store, name, src, n, args.concurrency, log))
            if "requests" in want and not store.is_local:
                results.requests.append(
                    run_requests(
                        store,
                        synthetic,
                        profile.tree.file_count,
                        profile.request_exports,
                        profile.request_files,
                        profile.list_exports,
                        profile.cli_reps,
                        log,
                    )
                )
            if "many" in want:
                results.many += run_many(store, args.many_sizes, min(reps, 3), log)
            if memory_tree is not None:
                results.memory.append(run_memory(store, memory_tree, warm, "staged", log))
            if "sync" in want:
                log(f"{backend}: sync vs raw fs.get")
                results.sync.append(run_sync(store, synthetic, reps, workdir, log))
    if "estimator" in want:
        results.estimator = run_estimator(profile.estimator_evals, workdir, log)
    results.machine["load_end"] = load_average()
    busy = max(_first_load(results.machine["load_start"]), _first_load(results.machine["load_end"]))
    if busy > 0.5 * (os.cpu_count() or 1):
        results.notes.append(
            f"The machine was busy with other work (1-minute load up to {busy:.1f} on "
            f"{os.cpu_count()} cores): absolute times are inflated; the interleaved ratios "
            "are less affected but their spread is wider."
        )
    return results


def _first_load(text: str) -> float:
    try:
        return float(text.split("/")[0])
    except ValueError:
        return 0.0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    own_workdir = args.workdir is None
    workdir = args.workdir or tempfile.mkdtemp(prefix="cloud-exporter-bench-")
    os.makedirs(workdir, exist_ok=True)
    try:
        results = run(args, workdir)
    finally:
        if own_workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    text = render(results)
    docs = REPO / "docs" / "performance.md" if args.update_docs else None
    write_outputs(results, text, args.output, docs)
    print(text)
    log(f"done; report in {args.output}" + (f" and {docs}" if docs else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
