"""``import cloud_exporter``: time and which heavy modules it pulls in (target 7, first half)."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any

from .env import REPO

PROBE = """
import json, sys, time
start = time.perf_counter()
import cloud_exporter
seconds = time.perf_counter() - start
heavy = ("tensorflow", "keras", "s3fs", "gcsfs", "botocore", "aiohttp", "numpy")
print(json.dumps({"seconds": seconds,
                  "loaded": [m for m in heavy if m in sys.modules]}))
"""


@dataclass
class ImportResult:
    seconds: list[float] = field(default_factory=list)
    loaded: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def measure_import(reps: int = 7) -> ImportResult:
    """Time ``import cloud_exporter`` in fresh interpreters (one untimed run compiles .pyc)."""
    result = ImportResult()
    for i in range(reps + 1):
        proc = subprocess.run(
            [sys.executable, "-c", PROBE],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        if i > 0:
            result.seconds.append(out["seconds"])
        result.loaded = out["loaded"]
    return result
