"""Target 4: run the estimator harness with the estimator venv's interpreter."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from dataclasses import dataclass, field
from typing import Any

from .env import REPO, estimator_python
from .transfer import Log


@dataclass
class EstimatorResult:
    interpreter: str = ""
    stock: list[float] = field(default_factory=list)
    ours: list[float] | None = None
    ours_how: str = ""
    tf_version: str = ""
    export_bytes: int = 0
    error: str = ""

    @property
    def ratios(self) -> list[float]:
        if not self.ours:
            return []
        return [o / s for o, s in zip(self.ours, self.stock, strict=True)]

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def run_estimator(evals: int, workdir: str, log: Log) -> EstimatorResult:
    python, how = estimator_python()
    if python is None:
        return EstimatorResult(error=how)
    log(f"  estimator: {evals} evaluations in one train_and_evaluate with {python}")
    result = EstimatorResult(interpreter=how)
    harness = str(REPO / "benchmarks" / "estimator_harness.py")
    with tempfile.TemporaryDirectory(prefix="estimator-", dir=workdir) as tmp:
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(REPO))
        try:
            proc = subprocess.run(
                [python, harness, tmp, str(evals)],
                cwd=REPO,
                env=env,
                capture_output=True,
                text=True,
                timeout=1200,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            result.error = f"harness did not run: {exc}"
            return result
    if proc.returncode != 0:
        result.error = f"harness failed (exit {proc.returncode}): {proc.stderr[-1500:]}"
        return result
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    result.stock, result.ours = out["stock"], out["ours"]
    result.ours_how, result.tf_version = out["ours_how"], out["tf_version"]
    result.export_bytes = out["export_bytes"]
    return result
