"""A Vertex AI custom training job: export where Vertex says, hand Vertex a servable URI.

Vertex AI sets AIP_MODEL_DIR (``<base_output_directory>/model/``) in custom jobs; this script
publishes versions there (``<AIP_MODEL_DIR>/<version>/saved_model.pb``) and prints the URI to
give to model upload (``artifact_uri``): the chosen version's directory. With ``--promote-to URI``
it also copies the best export, server-side, flat into URI (``saved_model.pb`` directly under
it), for flows whose artifact URI is fixed in advance::

    python examples/vertex_custom_job.py                       # in the job: uses $AIP_MODEL_DIR
    python examples/vertex_custom_job.py --base gs://b/exports --promote-to "$AIP_MODEL_DIR"

Storage options (tests, emulators) come from ``--storage-options JSON`` or the
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

from cloud_exporter.jobs import default_export_base, is_publisher, promote, vertex_artifact_uri  # noqa: E402
from cloud_exporter.keras import ExportCallback  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", help="export base (default: $AIP_MODEL_DIR)")
    parser.add_argument("--promote-to", help="also copy the best export flat into this URI")
    parser.add_argument(
        "--storage-options", default=os.environ.get("CLOUD_EXPORTER_STORAGE_OPTIONS")
    )
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--verbose", "-v", action="store_true", help="TensorFlow logs, tracebacks")
    return parser.parse_args(argv)


def train(base: str, epochs: int, options: dict | None) -> None:
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, (256, 3)).astype("float32")
    y = (x.sum(axis=1, keepdims=True) > 0).astype("float32")
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1, activation="sigmoid")])
    model.compile(optimizer="adam", loss="binary_crossentropy")
    callback = ExportCallback(base, monitor="val_loss", keep=3, storage_options=options)
    model.fit(x, y, epochs=epochs, validation_split=0.25, verbose=0, callbacks=[callback])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    options = json.loads(args.storage_options) if args.storage_options else None
    base = default_export_base(args.base)  # explicit, else $AIP_MODEL_DIR
    train(base, args.epochs, options)
    if not is_publisher():
        return 0  # other workers of a multi-worker job stop here
    result = {"base": base, "artifact_uri": vertex_artifact_uri(base, storage_options=options)}
    if args.promote_to:
        best = promote(
            base, args.promote_to, best=("val_loss", "min"), flat=True, storage_options=options
        )
        result["promoted"] = {"uri": best.uri, "version": best.version}
        result["promoted_artifact_uri"] = vertex_artifact_uri(
            args.promote_to, storage_options=options
        )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
