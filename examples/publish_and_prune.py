"""The library without a training framework adapter: publish, list, verify, prune.

    python examples/publish_and_prune.py --base s3://my-bucket/models/demo
    python examples/publish_and_prune.py --base /tmp/exports --source path/to/saved_model

Without ``--source`` it saves a tiny ``tf.Module`` as the SavedModel to publish (four times,
with a made-up metric), then keeps the newest two plus the best by that metric.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

from cloud_exporter.cli_demo import quiet_tensorflow, run_main

quiet_tensorflow(sys.argv)  # before TensorFlow loads: its log noise only with --verbose

from cloud_exporter import latest_export, list_exports, prune, publish, verify_export  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="export base URI (s3://, gs://, a path)")
    parser.add_argument(
        "--storage-options", default=os.environ.get("CLOUD_EXPORTER_STORAGE_OPTIONS")
    )
    parser.add_argument("--source", help="a SavedModel directory (default: a tiny tf.Module)")
    parser.add_argument("--verbose", "-v", action="store_true", help="TensorFlow logs, tracebacks")
    return parser.parse_args(argv)


def tiny_saved_model(path: str) -> str:
    import tensorflow as tf

    class Affine(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
        def __call__(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"y": 3.0 * x + 1.0}

    module = Affine()
    tf.saved_model.save(module, path, signatures=module.__call__)
    return path


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    opts = {"storage_options": json.loads(args.storage_options) if args.storage_options else None}
    with tempfile.TemporaryDirectory() as tmp:
        source = args.source or tiny_saved_model(os.path.join(tmp, "model"))
        for step, loss in ((100, 0.4), (200, 0.9), (300, 0.6), (400, 0.7)):
            info = publish(source, args.base, metadata={"step": step, "loss": loss}, **opts)
            print(f"published {info.uri} ({info.total_size} bytes)")
    for export in list_exports(args.base, **opts):
        verify_export(args.base, export.version, deep=True, **opts)
    report = prune(args.base, keep=2, keep_best=("loss", "min", 1), **opts)
    print(f"pruned {report.deleted}; kept {sorted(report.kept)}")
    latest = latest_export(args.base, **opts)
    remaining = [{"version": e.version, **e.metadata} for e in list_exports(args.base, **opts)]
    print(json.dumps({"latest": latest.version if latest else None, "remaining": remaining}))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
