"""tf.estimator.train_and_evaluate with EvalSpec exporters that publish to a base URI.

Needs TensorFlow 2.15 with tensorflow-estimator. Checkpoints stay on local disk (TF 2.15 cannot
write s3:// itself); each exporter writes its SavedModel to a local temporary directory and
publishes it atomically under ``<base>/<exporter name>/<version>/``::

    python examples/estimator_evalspec.py --base s3://my-bucket/models/demo
    python examples/estimator_evalspec.py --base gs://my-bucket/models/demo --steps 400

Storage options (endpoint, credentials) come from ``--storage-options JSON`` or the
CLOUD_EXPORTER_STORAGE_OPTIONS environment variable.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

from cloud_exporter.cli_demo import quiet_tensorflow, run_main

quiet_tensorflow(sys.argv)  # before TensorFlow loads: its log noise only with --verbose

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from cloud_exporter import list_exports, verify_export  # noqa: E402
from cloud_exporter.estimator import BestExporter, FinalExporter, LatestExporter  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="export base URI (s3://, gs://, a path)")
    parser.add_argument(
        "--storage-options", default=os.environ.get("CLOUD_EXPORTER_STORAGE_OPTIONS")
    )
    parser.add_argument("--model-dir", help="local checkpoint directory (default: a temp dir)")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--checkpoint-every", type=int, default=10)
    parser.add_argument("--verbose", "-v", action="store_true", help="TensorFlow logs, tracebacks")
    return parser.parse_args(argv)


def input_fn(n: int, repeat: bool) -> tf.data.Dataset:
    x = np.linspace(-1.0, 1.0, n, dtype=np.float32).reshape(-1, 1)
    data = tf.data.Dataset.from_tensor_slices(({"x": x}, 2.0 * x + 1.0))
    return (data.repeat() if repeat else data).batch(16)


def serving_input_receiver_fn() -> tf.estimator.export.ServingInputReceiver:
    x = tf.compat.v1.placeholder(tf.float32, [None, 1], name="x")
    return tf.estimator.export.ServingInputReceiver({"x": x}, {"x": x})


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    options = json.loads(args.storage_options) if args.storage_options else None
    model_dir = args.model_dir or tempfile.mkdtemp(prefix="estimator-example-")
    config = tf.estimator.RunConfig(model_dir, save_checkpoints_steps=args.checkpoint_every)
    estimator = tf.estimator.LinearRegressor(
        [tf.feature_column.numeric_column("x")],
        config=config,
        optimizer=lambda: tf.keras.optimizers.legacy.SGD(0.1),
    )
    common = {"storage_options": options}
    exporters = [
        LatestExporter(
            "latest",
            serving_input_receiver_fn,
            exports_to_keep=2,
            export_base=f"{args.base}/latest",
            **common,
        ),
        BestExporter(
            "best",
            serving_input_receiver_fn,
            exports_to_keep=2,
            export_base=f"{args.base}/best",
            **common,
        ),
        FinalExporter(
            "final", serving_input_receiver_fn, export_base=f"{args.base}/final", **common
        ),
    ]
    train_spec = tf.estimator.TrainSpec(lambda: input_fn(64, True), max_steps=args.steps)
    eval_spec = tf.estimator.EvalSpec(
        lambda: input_fn(32, False), steps=None, exporters=exporters, throttle_secs=0
    )
    tf.estimator.train_and_evaluate(estimator, train_spec, eval_spec)
    summary = {}
    for exporter in exporters:
        base = f"{args.base}/{exporter.name}"
        exports = list_exports(base, storage_options=options)
        for export in exports:
            verify_export(base, export.version, storage_options=options)
        summary[exporter.name] = [
            {
                "version": e.version,
                "uri": e.uri,
                "global_step": e.metadata["global_step"],
                "loss": e.metadata["metrics"].get("loss"),
            }
            for e in exports
        ]
        print(f"{exporter.name}: {[e.version for e in exports]}")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
