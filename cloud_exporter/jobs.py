"""Cloud training jobs: where to export, who publishes, and what to hand the platform.

* :func:`default_export_base`: an explicit base, else Vertex AI's ``AIP_MODEL_DIR``, else
  SageMaker's ``SM_MODEL_DIR``; :class:`ExportBaseNotFoundError` otherwise.
* :func:`is_publisher`: whether this process publishes, from ``TF_CONFIG``.
* :func:`promote`: server-side copy of one committed export to a serving location, either a
  new version under a serving base (``<serving>/<version>/``) or a flat directory with
  ``saved_model.pb`` directly inside (what a fixed Vertex AI artifact URI needs); see
  ``docs/cloud-jobs.md``.
* :func:`vertex_artifact_uri`, :func:`read_promoted`, :func:`select_export`,
  :func:`finalize_model_dir`, :func:`sagemaker_hyperparameters`.

Importing this module does not import TensorFlow.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from .errors import InvalidArgumentError
from .exports import list_exports
from .layout import STAGING_DIRNAME, join
from .promotion import PENDING_NAME, promote, read_promoted, select_export
from .retention import prune
from .retry import DEFAULT_RETRY, RetryPolicy
from .storage import Storage, resolve
from .training import env_json_object, role_from_tf_config

__all__ = [
    "ExportBaseNotFoundError",
    "PENDING_NAME",
    "default_export_base",
    "detect_platform",
    "finalize_model_dir",
    "is_publisher",
    "promote",
    "read_promoted",
    "sagemaker_hyperparameters",
    "select_export",
    "vertex_artifact_uri",
]

VERTEX_MODEL_DIR = "AIP_MODEL_DIR"
SAGEMAKER_MODEL_DIR = "SM_MODEL_DIR"
SAGEMAKER_HPS = "SM_HPS"


class ExportBaseNotFoundError(InvalidArgumentError):
    """No base was given and no platform variable (AIP_MODEL_DIR, SM_MODEL_DIR) is set."""


# -- where to export, who exports ---------------------------------------------------------------
def default_export_base(
    base: str | None = None, *, environ: Mapping[str, str] | None = None
) -> str:
    """``base`` if given, else ``$AIP_MODEL_DIR`` (Vertex AI), else ``$SM_MODEL_DIR``."""
    env = os.environ if environ is None else environ
    for value in (base, env.get(VERTEX_MODEL_DIR), env.get(SAGEMAKER_MODEL_DIR)):
        if value and str(value).strip():
            value = str(value).strip()
            stripped = value.rstrip("/")
            return stripped if stripped and not stripped.endswith(":") else value
    raise ExportBaseNotFoundError(
        f"no export base: pass one (e.g. --base gs://bucket/models/NAME), or run where "
        f"{VERTEX_MODEL_DIR} (Vertex AI custom jobs) or {SAGEMAKER_MODEL_DIR} (SageMaker) is set"
    )


def detect_platform(environ: Mapping[str, str] | None = None) -> str | None:
    """``"vertex"``, ``"sagemaker"`` or None, from the variables each platform sets."""
    env = os.environ if environ is None else environ
    if env.get(VERTEX_MODEL_DIR):
        return "vertex"
    if env.get(SAGEMAKER_MODEL_DIR):
        return "sagemaker"
    return None


def is_publisher(tf_config: str | Mapping[str, Any] | None = None) -> bool:
    """True for the one process of a job that publishes (chief, evaluator, or lone worker 0).

    ``tf_config`` defaults to the ``TF_CONFIG`` environment variable; no cluster means True.
    """
    return role_from_tf_config(tf_config).publishes


def sagemaker_hyperparameters(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The job's hyperparameters from ``$SM_HPS`` (a JSON object); ``{}`` outside SageMaker."""
    env = os.environ if environ is None else environ
    raw = env.get(SAGEMAKER_HPS, "").strip()
    if not raw:
        return {}
    return env_json_object(SAGEMAKER_HPS, raw)


def finalize_model_dir(
    model_dir: str | None = None, *, keep: int | None = None, retry: RetryPolicy = DEFAULT_RETRY
) -> list[int]:
    """At the end of a SageMaker job: prune ``SM_MODEL_DIR`` and remove leftovers, so that
    model.tar.gz holds only ``<version>/`` directories. Returns the versions that remain.

    Nothing may publish into ``model_dir`` meanwhile (crash leftovers go at once).
    """
    base = default_export_base(model_dir)
    prune(base, keep=keep, grace_seconds=0, retry=retry)
    fs, root = resolve(base)
    storage = Storage(fs, retry)
    staging = join(root, STAGING_DIRNAME)  # what is left there now: finished prunes' journals
    storage.delete([join(staging, e.relpath) for e in storage.list_tree(staging)])
    storage.remove_empty_dirs(staging)
    return [e.version for e in list_exports(base, retry=retry)]


def vertex_artifact_uri(
    base: str,
    *,
    version: int | None = None,
    best: tuple[str, str] | None = None,
    filesystem: Any = None,
    storage_options: dict[str, Any] | None = None,
    retry: RetryPolicy = DEFAULT_RETRY,
) -> str:
    """The URI to give Vertex AI's model upload (``artifact_uri``): a directory with
    ``saved_model.pb`` directly inside. For a flat location made by ``promote(flat=True)``
    that is the location itself; for an export base, the chosen version's directory."""
    opts = {"filesystem": filesystem, "storage_options": storage_options, "retry": retry}
    if version is None and best is None:
        promoted = read_promoted(base, **opts)
        if promoted is not None:
            return promoted.uri
    return select_export(base, version=version, best=best, **opts).uri
