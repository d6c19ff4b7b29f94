"""Peak memory growth of a publishing process (target 5), measured in a child process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

from .backends import Store
from .env import REPO
from .transfer import Log
from .workloads import tree_stats


@dataclass
class MemoryResult:
    backend: str
    source_bytes: int
    largest_file: int
    growth: int
    rss_before: int
    seconds: float
    error: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def largest_file(root: str) -> int:
    return max(
        os.path.getsize(os.path.join(d, n)) for d, _dirs, names in os.walk(root) for n in names
    )


def run_memory(store: Store, src: str, warm: str, mode: str, log: Log) -> MemoryResult:
    _, nbytes = tree_stats(src)
    spec = {
        "protocol": store.protocol,
        "options": store.storage_options,
        "source": src,
        "warm": warm,
        "base": store.uri("mem", "big"),
        "warm_base": store.uri("mem", "warm"),
        "mode": mode,
    }
    log(f"  {store.name}: memory probe, {nbytes / (1 << 20):.0f} MiB in a child process")
    # Run as a script (not -m from the repository) so that PYTHONPATH decides which
    # cloud_exporter is measured; the repository comes last as a fallback.
    path = os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"), str(REPO)) if p)
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "memprobe.py"), json.dumps(spec)],
        env=dict(os.environ, PYTHONPATH=path),
        capture_output=True,
        text=True,
        timeout=1800,
    )
    store.clear("mem")
    if proc.returncode != 0:
        return MemoryResult(store.name, nbytes, largest_file(src), 0, 0, 0.0, proc.stderr[-1500:])
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return MemoryResult(
        store.name, nbytes, largest_file(src), out["growth"], out["rss_before"], out["seconds"]
    )
