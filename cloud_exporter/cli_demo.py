"""The ``cloud-exporter demo`` job: build a small real SavedModel, publish, list, verify, load.

It imports TensorFlow (only here, not at package import).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Callable, Sequence

from .cli_format import format_table, terminal_width
from .errors import CloudExporterError
from .exports import list_exports, verify_export
from .publishing import publish


def build_model(directory: str, slope: float) -> None:
    """Save a tiny linear model ``y = slope * x + 1`` with a serving signature."""
    import tensorflow as tf

    class Linear(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.slope = tf.Variable(slope, dtype=tf.float32)
            self.bias = tf.Variable(1.0, dtype=tf.float32)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
        def serve(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"y": self.slope * x + self.bias}

    module = Linear()
    tf.saved_model.save(module, directory, signatures={"serving_default": module.serve})


def predict(export_uri: str, x: float) -> float:
    """Load an export back with TensorFlow and run its serving signature on one value."""
    import tensorflow as tf

    loaded = tf.saved_model.load(export_uri.removeprefix("file://"))
    out = loaded.signatures["serving_default"](x=tf.constant([x], tf.float32))
    return float(out["y"].numpy()[0])


def quiet_tensorflow(argv: Sequence[str] | None = None) -> None:
    """Keep TensorFlow's C++ log lines, absl warnings and Python deprecation warnings out.

    Call it before TensorFlow is imported. Does nothing when ``argv`` has ``--verbose``/``-v``.
    """
    if argv is not None and ({"--verbose", "-v"} & set(argv)):
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # its startup notice is a log line
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module="tensorflow|keras|absl")
    for name in ("tensorflow", "absl", "h5py"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.ERROR)
    except ImportError:
        pass


def run_main(main: Callable[[], int], argv: Sequence[str] | None = None) -> int:
    """Run a script's ``main``: an error ends in one ``error: ...`` line and the CLI's exit code.

    ``--verbose``/``-v`` in ``argv`` (default ``sys.argv``) adds INFO logs and tracebacks.
    """
    from .cli import EXIT_CODES

    verbose = bool({"--verbose", "-v"} & set(sys.argv if argv is None else argv))
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING)
    try:
        return main()
    except CloudExporterError as exc:
        if verbose:
            logging.getLogger("cloud_exporter.cli").exception("failed")
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return next(code for kind, code in EXIT_CODES if isinstance(exc, kind))


def run_demo(
    base: str, count: int = 4, keep: int = 3, as_json: bool = False, verbose: bool = False
) -> int:
    """Publish ``count`` versions to ``base`` keeping ``keep``; print the table; verify all."""
    if not verbose:
        quiet_tensorflow()
    with tempfile.TemporaryDirectory(prefix="cloud-exporter-demo-") as tmp:
        notes = os.path.join(tmp, "notes.txt")
        with open(notes, "w") as f:
            f.write("built by cloud-exporter demo\n")
        for step in range(1, count + 1):
            model_dir = os.path.join(tmp, f"model-{step}")
            build_model(model_dir, slope=float(step))
            info = publish(
                model_dir,
                base,
                assets_extra={"notes.txt": notes},
                metadata={"global_step": step * 100, "slope": float(step)},
                keep=keep,
            )
            if not as_json:
                print(f"published {info.uri}")
    exports = list_exports(base)
    verified = [verify_export(base, e.version, deep=True) for e in exports]
    latest = verified[-1]
    y = predict(latest.uri, 2.0)
    if as_json:
        doc = {"exports": [e.to_dict() for e in verified], "latest_prediction_at_2": y}
        print(json.dumps(doc, indent=2))
        return 0
    print()
    print(format_table(verified, terminal_width()))
    print()
    print(f"verified {len(verified)} exports (sizes and SHA-256 checksums)")
    print(f"latest {latest.version} loaded with TensorFlow: y(2.0) = {y:g}")
    return 0
