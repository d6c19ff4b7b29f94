"""Run inside the current-TF install venv: Keras 3 ``fit`` with our ExportCallback publishing to
an object store, then load the newest export back and predict. Prints one JSON line.

argv: BASE STORAGE_OPTIONS_JSON WORKDIR
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import json
import sys

import keras
import numpy as np
import tensorflow as tf
from download import download

from cloud_exporter import list_exports, verify_export
from cloud_exporter.keras import ExportCallback


def main(base, options, workdir):
    keras.utils.set_random_seed(1)
    x = np.linspace(-1.0, 1.0, 64, dtype=np.float32).reshape(-1, 1)
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(0.1), "mse")
    callback = ExportCallback(base, every_n_epochs=10, keep=2, storage_options=options)
    model.fit(x, 2.0 * x + 1.0, epochs=30, batch_size=16, verbose=0, callbacks=[callback])
    exports = list_exports(base, storage_options=options)
    newest = exports[-1]
    verify_export(base, newest.version, deep=True, storage_options=options)
    local = download(newest.uri, options, os.path.join(workdir, "download"))
    loaded = tf.saved_model.load(local)
    got = loaded.signatures["serving_default"](tf.constant([[0.0], [0.5]], tf.float32))
    print(
        json.dumps(
            {
                "published": len(callback.published),
                "versions": [e.version for e in exports],
                "predictions": next(iter(got.values())).numpy().ravel().tolist(),
                "tensorflow": tf.__version__,
                "keras": keras.__version__,
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1], json.loads(sys.argv[2]), sys.argv[3])
