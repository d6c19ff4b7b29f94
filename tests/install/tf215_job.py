"""Run inside the TF 2.15 install venv: a real train_and_evaluate with our LatestExporter to an
object store, then load the export back and predict. Prints one JSON line.

argv: BASE STORAGE_OPTIONS_JSON WORKDIR
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import json
import sys

import numpy as np
import tensorflow as tf
from download import download

from cloud_exporter import list_exports, verify_export
from cloud_exporter.estimator import LatestExporter


def input_fn(n, repeat):
    x = np.linspace(-1.0, 1.0, n, dtype=np.float32).reshape(-1, 1)
    data = tf.data.Dataset.from_tensor_slices(({"x": x}, 2.0 * x + 1.0))
    return (data.repeat() if repeat else data).batch(16)


def serving_input_receiver_fn():
    x = tf.compat.v1.placeholder(tf.float32, [None, 1], name="x")
    return tf.estimator.export.ServingInputReceiver({"x": x}, {"x": x})


def main(base, options, workdir):
    config = tf.estimator.RunConfig(
        os.path.join(workdir, "model"), save_checkpoints_steps=10, tf_random_seed=1
    )
    estimator = tf.estimator.LinearRegressor(
        [tf.feature_column.numeric_column("x")],
        config=config,
        optimizer=lambda: tf.keras.optimizers.legacy.SGD(0.1),
    )
    exporter = LatestExporter(
        "latest",
        serving_input_receiver_fn,
        exports_to_keep=2,
        export_base=base,
        storage_options=options,
    )
    train = tf.estimator.TrainSpec(lambda: input_fn(64, True), max_steps=30)
    evals = tf.estimator.EvalSpec(
        lambda: input_fn(32, False), steps=None, exporters=[exporter], throttle_secs=0
    )
    _, exported = tf.estimator.train_and_evaluate(estimator, train, evals)
    exports = list_exports(base, storage_options=options)
    newest = exports[-1]
    verify_export(base, newest.version, deep=True, storage_options=options)
    local = download(newest.uri, options, os.path.join(workdir, "download"))
    loaded = tf.saved_model.load(local)
    got = loaded.signatures["predict"](x=tf.constant([[0.0], [0.5]], tf.float32))
    print(
        json.dumps(
            {
                "exported": [e.decode() if isinstance(e, bytes) else e for e in exported],
                "returned_bytes": all(isinstance(e, bytes) for e in exported),
                "versions": [e.version for e in exports],
                "newest": newest.uri,
                "steps": [e.metadata["global_step"] for e in exports],
                "predictions": got["predictions"].numpy().ravel().tolist(),
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1], json.loads(sys.argv[2]), sys.argv[3])
