"""Child process: export a small real Keras model with ``model.export(DEST)``.

Usage: python -m benchmarks.keras_model DEST. An MLP over a 5,000-token embedding and 64 dense
features (about 4 M parameters, a 16 MB variables shard); weights are random, training adds
nothing to a transfer benchmark.
"""

from __future__ import annotations

import os
import sys


def main(dest: str) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    keras.utils.set_random_seed(0)
    vocab = [f"tok{i}" for i in range(5000)]
    text = keras.Input(shape=(1,), dtype="string", name="text")
    dense = keras.Input(shape=(64,), name="x")
    ids = keras.layers.StringLookup(vocabulary=vocab)(text)
    emb = keras.layers.Flatten()(keras.layers.Embedding(len(vocab) + 1, 64)(ids))
    hidden = keras.layers.Concatenate()([emb, dense])
    for width in (1024, 1024, 512):
        hidden = keras.layers.Dense(width, activation="relu")(hidden)
    model = keras.Model([text, dense], keras.layers.Dense(1)(hidden))
    model.export(dest, verbose=False)


if __name__ == "__main__":
    main(sys.argv[1])
