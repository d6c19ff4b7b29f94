"""An estimator double: ``Mock(spec=Estimator)`` whose ``export_saved_model`` writes a real
SavedModel (one variable, a ``serving_default`` signature) and returns its path as bytes, as a
real Estimator does. Its ``config`` is a Mock, not a RunConfig, as in users' own unit tests.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from functools import cache
from typing import Any
from unittest import mock

import tensorflow as tf
from tensorflow_estimator.python.estimator import estimator as estimator_lib


@cache
def _template() -> str:
    """One real SavedModel per process (y = 2x + 1), copied for every export."""

    class Line(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = tf.Variable(2.0)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
        def __call__(self, x: Any) -> Any:
            return {"y": self.w * x + 1.0}

    path = os.path.join(tempfile.mkdtemp(prefix="double-template-"), "model")
    line = Line()
    tf.saved_model.save(line, path, signatures=line.__call__)
    return path


def write_saved_model(directory: str) -> str:
    """Copy the template SavedModel to ``directory`` (created); returns it."""
    shutil.copytree(_template(), directory)
    return directory


def _export_saved_model(
    export_dir_base: Any,
    serving_input_receiver_fn: Any,
    assets_extra: Any = None,
    as_text: bool = False,
    checkpoint_path: Any = None,
) -> bytes:
    base = export_dir_base.decode() if isinstance(export_dir_base, bytes) else export_dir_base
    while True:  # a fresh 10-digit timestamp directory, as the estimator names them
        target = os.path.join(base, str(int(time.time())))
        if not os.path.exists(target):
            break
        time.sleep(0.2)
    write_saved_model(target)
    for dest, src in (assets_extra or {}).items():
        extra = os.path.join(target, "assets.extra", dest)
        os.makedirs(os.path.dirname(extra), exist_ok=True)
        tf.io.gfile.copy(src, extra)
    return target.encode()


def make_double(model_dir: str | None = None) -> Any:
    estimator = mock.Mock(spec=estimator_lib.Estimator)
    estimator.export_saved_model.side_effect = _export_saved_model
    estimator.model_dir = model_dir
    return estimator
