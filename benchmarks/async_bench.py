"""``python -m benchmarks.async_bench``: training time blocked per export, sync vs asynchronous.

A Keras model of about 200 MiB (a 25,600 x 1,024 float32 embedding) is exported during
"training" by ``ExportCallback.on_epoch_end`` to the moto S3 server, exactly as ``fit`` calls it.
Three ways are timed in rotating order in one run (so the ratios share the machine's load):

* ``model.export`` into a local temp dir alone (the floor: what training must wait for);
* ``ExportCallback(...)``: blocked for the local export and the whole upload;
* ``ExportCallback(..., asynchronous=True)``: blocked for the local export only; the upload of the
  previous export has finished (exports minutes apart, uploads seconds long), then waited for
  outside the timed region. Also timed back to back (the previous upload still running).

Target (issue 13): blocked asynchronous <= 1.05 x the local ``model.export`` alone.
Writes benchmarks/results/async.md (and prints it).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from .backends import open_store
from .env import RESULTS_DIR, machine_info

TARGET = 1.05


def log(message: str) -> None:
    print(f"[async-bench] {message}", file=sys.stderr, flush=True)


def build_model(rows: int) -> Any:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((1,), dtype="int32"),
            keras.layers.Embedding(rows, 1024),
            keras.layers.Flatten(),
            keras.layers.Dense(1),
        ]
    )
    model.compile(optimizer="sgd", loss="mse")
    return model


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.async_bench")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--rows", type=int, default=25_600, help="embedding rows (~200 MiB export)")
    args = parser.parse_args(argv)

    from cloud_exporter.asynchronous import wait_all
    from cloud_exporter.keras import ExportCallback, save_model

    model = build_model(args.rows)
    workdir = tempfile.mkdtemp(prefix="cloud-exporter-async-bench-")
    local: list[float] = []
    sync: list[float] = []
    async_: list[float] = []
    back_to_back: list[float] = []
    try:
        probe = os.path.join(workdir, "probe")
        save_model(model, probe)
        size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(probe) for f in fs)
        shutil.rmtree(probe)
        log(f"model export: {size / 2**20:.0f} MiB")
        with open_store("s3", workdir) as store:
            opts = store.storage_options

            def callback(name: str, asynchronous: bool) -> Any:
                cb = ExportCallback(
                    store.uri(name), keep=None, storage_options=opts, asynchronous=asynchronous
                )
                cb.set_model(model)
                cb.on_train_begin()
                return cb

            def local_export() -> float:
                """Only ``model.export`` is timed (not the removal of the copy afterwards)."""
                dest = tempfile.mkdtemp(dir=workdir)
                try:
                    return timed(lambda: save_model(model, dest))
                finally:
                    shutil.rmtree(dest, ignore_errors=True)

            local_export()  # warm-up: traces the model's serving function once
            for rep in range(args.reps):
                order = [0, 1, 2][rep % 3 :] + [0, 1, 2][: rep % 3]
                for which in order:
                    if which == 0:
                        local.append(local_export())
                    elif which == 1:
                        cb = callback(f"sync-{rep}", False)
                        sync.append(timed(lambda cb=cb: cb.on_epoch_end(0, {"loss": 1.0})))
                        store.clear(f"sync-{rep}")
                    else:
                        cb = callback(f"async-{rep}", True)
                        async_.append(timed(lambda cb=cb: cb.on_epoch_end(0, {"loss": 1.0})))
                        cb.wait()  # not timed: the upload finishes before the next export
                        store.clear(f"async-{rep}")
                log(
                    f"rep {rep + 1}/{args.reps}: local {local[-1]:.2f} s, sync {sync[-1]:.2f} s, "
                    f"async {async_[-1]:.2f} s"
                )
            cb = callback("async-b2b", True)
            for epoch in range(3):
                back_to_back.append(timed(lambda e=epoch: cb.on_epoch_end(e, {"loss": 1.0})))
            cb.wait()
            wait_all()
            store.clear("async-b2b")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    med = statistics.median
    ratio = med(async_) / med(local)
    verdict = "PASS" if ratio <= TARGET else "MISS"
    info = machine_info()
    lines = [
        "# Asynchronous publishing: training time blocked per export",
        "",
        f"Keras model export of {size / 2**20:.0f} MiB to the moto S3 server (loopback), "
        f"{args.reps} interleaved repetitions; medians (range).",
        f"Machine: {info.get('cpu', '?')}, {os.cpu_count()} cores, load at start "
        f"{info.get('load_start', '?')}.",
        "",
        "| way | blocked per export (s) |",
        "|---|---|",
        f"| local `model.export` alone | {med(local):.2f} ({min(local):.2f}-{max(local):.2f}) |",
        f"| synchronous `ExportCallback` | {med(sync):.2f} ({min(sync):.2f}-{max(sync):.2f}) |",
        f"| `asynchronous=True` | {med(async_):.2f} ({min(async_):.2f}-{max(async_):.2f}) |",
        f"| `asynchronous=True`, back to back (3 exports, previous upload running) | "
        f"{med(back_to_back):.2f} ({min(back_to_back):.2f}-{max(back_to_back):.2f}) |",
        "",
        f"Target: blocked asynchronous <= {TARGET} x local export alone: "
        f"**{ratio:.3f}x, {verdict}** (synchronous: {med(sync) / med(local):.2f}x).",
        "",
        "Back to back, the next export waits for nothing but competes for CPU with the",
        "previous upload (hashing, the client); on 2 shared cores that shows in its time.",
    ]
    text = "\n".join(lines) + "\n"
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "async.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
