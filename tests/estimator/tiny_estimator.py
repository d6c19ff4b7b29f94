"""A tiny LinearRegressor (y = 2x + 1) for the estimator tests and their child processes."""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

EVERY = 10  # checkpoint (and so evaluation) every 10 steps


def input_fn(n: int, repeat: bool) -> Any:
    x = np.linspace(-1.0, 1.0, n, dtype=np.float32).reshape(-1, 1)
    data = tf.data.Dataset.from_tensor_slices(({"x": x}, 2.0 * x + 1.0))
    return (data.repeat() if repeat else data).batch(16)


def serving_input_receiver_fn() -> Any:
    x = tf.compat.v1.placeholder(tf.float32, [None, 1], name="x")
    return tf.estimator.export.ServingInputReceiver({"x": x}, {"x": x})


def make_estimator(model_dir: str) -> Any:
    config = tf.estimator.RunConfig(
        model_dir, save_checkpoints_steps=EVERY, log_step_count_steps=1000, tf_random_seed=1
    )
    return tf.estimator.LinearRegressor(
        [tf.feature_column.numeric_column("x")],
        config=config,
        optimizer=lambda: tf.keras.optimizers.legacy.SGD(0.1),
    )
