"""Helpers shared by the TensorFlow adapters; importing this module does not import TensorFlow.

* who publishes in a multi-worker job (from ``TF_CONFIG`` or an estimator's RunConfig);
* numeric metrics as plain JSON numbers for the marker;
* a throwaway local directory for the SavedModel that TensorFlow writes before we publish it.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import InvalidArgumentError
from .marker import ExportInfo
from .untrusted import load_json

log = logging.getLogger(__name__)

CHIEF_TYPES = ("chief", "master")
TF_CONFIG_VAR = "TF_CONFIG"


@dataclass(frozen=True)
class TaskRole:
    """This process's place in a TensorFlow cluster (``task_type`` None: not distributed)."""

    task_type: str | None = None
    task_id: int = 0
    jobs: tuple[str, ...] = ()
    forced: bool | None = None  # an explicit is_chief= from the caller

    @property
    def publishes(self) -> bool:
        """True for the one task that publishes exports.

        That is: a process outside any cluster, the chief (or ``master``), the ``evaluator``
        (estimator exporters run there in parameter-server training), or worker 0 of a cluster
        that has no chief. Other workers and parameter servers do not publish.
        """
        if self.forced is not None:
            return self.forced
        if self.task_type is None:
            return True
        if self.task_type in CHIEF_TYPES or self.task_type == "evaluator":
            return True
        has_chief = any(job in CHIEF_TYPES for job in self.jobs)
        return self.task_type == "worker" and self.task_id == 0 and not has_chief

    def describe(self) -> str:
        if self.forced is not None:
            return f"is_chief={self.forced}"
        return "single process" if self.task_type is None else f"{self.task_type}:{self.task_id}"


MAX_ENV_JSON_BYTES = 1 << 20


def env_json_object(name: str, raw: str) -> dict[str, Any]:
    """The JSON object in environment variable ``name`` (TF_CONFIG, SM_HPS): size and depth
    bounded like JSON read from storage; InvalidArgumentError naming the variable otherwise."""
    try:
        value = load_json(raw.encode("utf-8", "surrogatepass"), MAX_ENV_JSON_BYTES)
    except (ValueError, UnicodeError) as exc:
        raise InvalidArgumentError(f"{name} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidArgumentError(f"{name} must be a JSON object, got {value!r:.200}")
    return value


def role_from_tf_config(tf_config: str | Mapping[str, Any] | None = None) -> TaskRole:
    """The role that ``TF_CONFIG`` (a JSON string or dict; default: the environment) gives us."""
    if tf_config is None:
        tf_config = os.environ.get(TF_CONFIG_VAR, "")
    if isinstance(tf_config, str):
        if not tf_config.strip():
            return TaskRole()
        tf_config = env_json_object(TF_CONFIG_VAR, tf_config)
    if not isinstance(tf_config, Mapping):
        raise InvalidArgumentError(f"{TF_CONFIG_VAR} must be a JSON object, got {tf_config!r}")
    cluster = tf_config.get("cluster") or {}
    task = tf_config.get("task") or {}
    if not isinstance(cluster, Mapping) or not isinstance(task, Mapping):
        raise InvalidArgumentError(f"{TF_CONFIG_VAR} 'cluster' and 'task' must be objects")
    if not cluster:
        return TaskRole()
    return _role(task.get("type"), task.get("index", 0), cluster)


def role_from_run_config(config: Any) -> TaskRole:
    """The role an estimator's RunConfig describes (it parsed ``TF_CONFIG`` itself)."""
    spec = getattr(config, "cluster_spec", None)
    jobs = tuple(spec.jobs) if spec is not None and spec.jobs else ()
    if not jobs:
        return TaskRole()
    return _role(getattr(config, "task_type", None), getattr(config, "task_id", 0), jobs)


def _role(task_type: object, task_id: object, jobs: Iterable[str]) -> TaskRole:
    if not isinstance(task_type, str) or not task_type:
        raise InvalidArgumentError(
            f"{TF_CONFIG_VAR} describes a cluster but no task type: set task.type "
            "('chief', 'worker', 'evaluator', ...) and task.index"
        )
    if not isinstance(task_id, int) or isinstance(task_id, bool) or task_id < 0:
        raise InvalidArgumentError(f"task index must be an int >= 0, got {task_id!r}")
    return TaskRole(task_type, task_id, tuple(sorted(jobs)))


def resolve_role(is_chief: bool | None, default: TaskRole) -> TaskRole:
    """An explicit ``is_chief`` (for launchers without TF_CONFIG) overrides the detected role."""
    if is_chief is None:
        return default
    return TaskRole(forced=bool(is_chief))


def to_number(value: object) -> int | float | None:
    """A finite Python int/float from Python, NumPy or TensorFlow scalars; else None."""
    if hasattr(value, "numpy") and callable(value.numpy):  # eager tensors
        value = value.numpy()
    if getattr(value, "shape", None) == () and hasattr(value, "item"):  # NumPy scalars
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def numeric_metrics(values: Mapping[str, Any] | None) -> dict[str, int | float]:
    """The finite numeric entries of ``values`` (others, e.g. strings or NaN, are dropped)."""
    metrics: dict[str, int | float] = {}
    for key, value in (values or {}).items():
        number = to_number(value)
        if number is not None:
            metrics[str(key)] = number
    return metrics


@contextlib.contextmanager
def local_export_dir(temp_dir: str | None = None) -> Iterator[str]:
    """A fresh local directory for TensorFlow to write into, removed afterwards."""
    path = tempfile.mkdtemp(prefix="cloud-exporter-", dir=temp_dir)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def export_location(base: str, info: ExportInfo) -> str:
    """Where the version lives, in the form of ``base``: a plain path for a plain-path base."""
    if "://" not in str(base) and info.uri.startswith("file://"):
        return info.uri[len("file://") :]
    return info.uri


def merged_metadata(user: Mapping[str, Any] | None, ours: Mapping[str, Any]) -> dict[str, Any]:
    """User metadata plus the adapter's fields (which win on a clash, with a warning)."""
    merged = dict(user or {})
    clash = sorted(set(merged) & set(ours))
    if clash:
        log.warning("metadata keys %s are set by the adapter and override yours", clash)
    merged.update(ours)
    return merged


def global_step(eval_result: Mapping[str, Any] | None, checkpoint_path: str | None) -> int | None:
    step = to_number((eval_result or {}).get("global_step"))
    if isinstance(step, int):
        return step
    tail = str(checkpoint_path or "").rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else None
