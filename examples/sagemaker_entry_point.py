"""A SageMaker TensorFlow training entry point: versions in SM_MODEL_DIR for TF Serving.

SageMaker runs ``python sagemaker_entry_point.py --epochs 3 --model_dir s3://...`` with the
hyperparameters as arguments (also in $SM_HPS) and SM_MODEL_DIR=/opt/ml/model. ``--model_dir``
is an S3 location for checkpoints, not the export location. Everything left in SM_MODEL_DIR is
uploaded as model.tar.gz when the job ends; SageMaker's TF Serving container needs
``<version>/saved_model.pb`` at its top, which is exactly the layout published here::

    SM_MODEL_DIR=/tmp/model python examples/sagemaker_entry_point.py --epochs 2
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

from cloud_exporter.jobs import (  # noqa: E402
    default_export_base,
    finalize_model_dir,
    is_publisher,
    sagemaker_hyperparameters,
)
from cloud_exporter.keras import ExportCallback  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    hps = sagemaker_hyperparameters()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=int(hps.get("epochs", 3)))
    keep_help = "versions to ship in model.tar.gz (TF Serving serves the highest)"
    parser.add_argument("--keep", type=int, default=int(hps.get("keep", 1)), help=keep_help)
    parser.add_argument("--model_dir", help="S3 URI for checkpoints (SageMaker passes it)")
    parser.add_argument("--sm-model-dir", default=os.environ.get("SM_MODEL_DIR"))
    parser.add_argument("--verbose", "-v", action="store_true", help="TensorFlow logs, tracebacks")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    base = default_export_base(args.sm_model_dir)  # explicit, else $SM_MODEL_DIR
    rng = np.random.default_rng(2)
    x = rng.uniform(-1, 1, (256, 4)).astype("float32")
    y = x @ np.arange(1, 5, dtype="float32").reshape(4, 1)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    callback = ExportCallback(base, keep=args.keep)
    model.fit(x, y, epochs=args.epochs, verbose=0, callbacks=[callback])
    if is_publisher():  # leave only <version>/ directories for model.tar.gz
        versions = finalize_model_dir(base, keep=args.keep)
        print(json.dumps({"model_dir": base, "versions": versions}))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
