"""Keras 3: publish during ``fit`` with one callback.

    python examples/keras_callback.py --base gs://my-bucket/models/demo
    python examples/keras_callback.py --base s3://my-bucket/models/demo --monitor val_loss

Every epoch (or only when ``--monitor`` improves) the model is exported to a local temporary
directory and published atomically as ``<base>/<version>/``; older versions are pruned to
``--keep``. Storage options come from ``--storage-options JSON`` or the
CLOUD_EXPORTER_STORAGE_OPTIONS environment variable.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from cloud_exporter.cli_demo import quiet_tensorflow, run_main

quiet_tensorflow(sys.argv)  # before TensorFlow loads: its log noise only with --verbose

import keras  # noqa: E402
import numpy as np  # noqa: E402

from cloud_exporter import latest_export, list_exports  # noqa: E402
from cloud_exporter.keras import ExportCallback  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="export base URI (s3://, gs://, a path)")
    parser.add_argument(
        "--storage-options", default=os.environ.get("CLOUD_EXPORTER_STORAGE_OPTIONS")
    )
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--monitor", help="publish only when this metric improves, e.g. val_loss")
    parser.add_argument("--keep", type=int, default=2)
    parser.add_argument("--verbose", "-v", action="store_true", help="TensorFlow logs, tracebacks")
    return parser.parse_args(argv)


def make_model() -> keras.Model:
    model = keras.Sequential(
        [keras.Input((2,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(1)]
    )
    model.compile(optimizer="adam", loss="mse")
    return model


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    options = json.loads(args.storage_options) if args.storage_options else None
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (256, 2)).astype("float32")
    y = x @ np.array([[2.0], [-1.0]], dtype="float32") + 0.5
    callback = ExportCallback(
        args.base, monitor=args.monitor, keep=args.keep, storage_options=options
    )
    make_model().fit(
        x, y, epochs=args.epochs, validation_split=0.25, verbose=0, callbacks=[callback]
    )
    latest = latest_export(args.base, storage_options=options)
    print(f"published {len(callback.published)} versions; serving {latest.uri}")
    exports = list_exports(args.base, storage_options=options)
    print(json.dumps([{"version": e.version, "epoch": e.metadata["epoch"]} for e in exports]))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
