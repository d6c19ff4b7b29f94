"""``python -m benchmarks.checksums``: the figures of issue 14 in one run.

* local publish (one-pass copy + CRC32C) vs ``shutil.copytree`` of the same tree (target <= 1.10);
* deep verify on GCS (crc32c from the listing) vs downloading the export (target <= 0.1);
* deep verify on S3: bytes read (target 0; HEADs with ChecksumMode instead), on moto as it is
  and on moto with a CRC32C implementation (it computes multipart checksums itself).

Uses the default 225 MiB tree of benchmarks/workloads.py (``--quick`` for the small one) and the
emulators of tests/servers.py. Prints a markdown table to stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator

import cloud_exporter as ce
from cloud_exporter.testing import FaultyFileSystem

from .backends import open_store
from .env import machine_info
from .workloads import PROFILES, make_tree

READS = {"open", "cat", "cat_file", "cat_ranges", "get", "get_file"}


def timed(
    fn: Callable[[], object], reps: int, before: Callable[[], object] = lambda: None
) -> list[float]:
    out = []
    for _ in range(reps):
        before()
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def local(src: str, workdir: str, reps: int) -> dict[str, float]:
    """Alternate copytree and publish; outputs are deleted and flushed (untimed) before each run
    so that neither pays for the other's dirty pages."""
    with open_store("local", workdir) as store:
        out = store.path("out")

        def fresh() -> None:
            shutil.rmtree(out, ignore_errors=True)
            os.sync()

        times: dict[str, list[float]] = {"copytree": [], "crc32c": [], "sha256": []}
        for _ in range(reps):
            times["copytree"] += timed(lambda: shutil.copytree(src, out), 1, fresh)
            times["crc32c"] += timed(lambda: ce.publish(src, out), 1, fresh)
            times["sha256"] += timed(lambda: ce.publish(src, out, checksum="sha256"), 1, fresh)
        fresh()
    c, p, s = (statistics.median(times[k]) for k in ("copytree", "crc32c", "sha256"))
    pairs = [a / b for a, b in zip(times["crc32c"], times["copytree"], strict=True)]
    return {
        "copytree s": c,
        "publish s": p,
        "publish/copytree": p / c,
        "sha256 publish/copytree": s / c,
        "publish/copytree range": f"{min(pairs):.2f}-{max(pairs):.2f}",
    }


def gcs(src: str, workdir: str, reps: int) -> dict[str, float]:
    with open_store("gcs", workdir) as store:
        info = ce.publish(src, store.uri("exports"), storage_options=store.storage_options)
        opts = store.storage_options
        verify = timed(
            lambda: ce.verify_export(
                store.uri("exports"), info.version, deep=True, storage_options=opts
            ),
            reps,
        )
        dest = os.path.join(workdir, "download")
        get = timed(
            lambda: store.new_fs().get(
                store.path("exports", str(info.version)) + "/", dest + "/", recursive=True
            ),
            reps,
            lambda: shutil.rmtree(dest, ignore_errors=True),
        )
        fs = FaultyFileSystem(store.new_fs())
        ce.verify_export(store.uri("exports"), info.version, deep=True, filesystem=fs)
        reads = [c for c in fs.calls if c.method in READS and not c.paths[0].endswith(".json")]
    v, g = statistics.median(verify), statistics.median(get)
    return {"deep verify s": v, "download s": g, "verify/download": v / g, "byte reads": len(reads)}


CRC32C_SHIM = """import google_crc32c


def crc32c(data, value=0):
    return google_crc32c.extend(value, bytes(data))
"""


@contextlib.contextmanager
def moto_with_crc32c(workdir: str, enabled: bool) -> Iterator[None]:
    """While the server starts: a stand-in `crc32c` module on its PYTHONPATH (moto computes a
    multipart upload's CRC32C itself and, without that package, computes CRC32 instead)."""
    if not enabled:
        yield
        return
    shim = os.path.join(workdir, "crc32c-shim")
    os.makedirs(shim, exist_ok=True)
    with open(os.path.join(shim, "crc32c.py"), "w") as f:
        f.write(CRC32C_SHIM)
    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [shim, before]))
    try:
        yield
    finally:
        if before is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = before


def s3(src: str, workdir: str, crc32c: bool) -> dict[str, float | str]:
    with contextlib.ExitStack() as stack:
        with moto_with_crc32c(workdir, crc32c):
            store = stack.enter_context(open_store("s3", workdir))
        info = ce.publish(src, store.uri("exports"), storage_options=store.storage_options)
        fs = FaultyFileSystem(store.new_fs())
        start = time.perf_counter()
        checked = ce.verify_export(store.uri("exports"), info.version, deep=True, filesystem=fs)
        took = time.perf_counter() - start
        read = {p for p, how in checked.verified_by.items() if how == "read"}
        read_bytes = sum(f.size for f in info.files if f.path in read)
    return {
        "deep verify s": took,
        "files by HEAD": len(info.files) - len(read),
        "files read": len(read),
        "bytes read": read_bytes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.checksums")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    profile = PROFILES["quick" if args.quick else "default"]
    with tempfile.TemporaryDirectory(prefix="ce-bench-crc-") as workdir:
        src = make_tree(os.path.join(workdir, "tree"), profile.tree)
        print(f"tree: {profile.tree.describe()}", file=sys.stderr)
        rows = {
            "local": local(src, workdir, args.reps),
            "gcs": gcs(src, workdir, args.reps),
            "s3 (moto, no crc32c package)": s3(src, workdir, crc32c=False),
            "s3 (moto computing CRC32C)": s3(src, workdir, crc32c=True),
        }
    info = machine_info()
    print(f"machine: {info['cpu']}, {info['cores']} cores, load {info['load_start']}\n")
    print("| store | figure | value |\n|---|---|---|")
    for store, figures in rows.items():
        for name, value in figures.items():
            shown = f"{value:.3f}" if isinstance(value, float) else str(value)
            print(f"| {store} | {name} | {shown} |")


if __name__ == "__main__":
    main()
