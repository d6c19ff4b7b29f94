"""Child process for the estimator venv (TF 2.15 + tensorflow-estimator): target 4.

One ``tf.estimator.train_and_evaluate`` of a DNNRegressor whose EvalSpec carries a single
timing exporter. At every evaluation it calls the stock ``tf.estimator.LatestExporter`` and
ours (``cloud_exporter.estimator.LatestExporter``) on the same checkpoint, alternating which
goes first (AB, BA, ...), each into its own directory under ``<model_dir>/export/``. Before
each call it waits, untimed, until the wall-clock second differs from that exporter's previous
call, so the stock exporter never pays its one-second sleep on a directory-name collision.

Usage: python benchmarks/estimator_harness.py WORKDIR EVALS. Prints one JSON line.
"""

from __future__ import annotations

import inspect
import json
import os
import sys
import time
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
FEATURES = 32
WIDTH = 512
BASE_PARAMS = ("base", "base_uri", "export_base", "base_dir", "uri", "destination", "target")


def make_ours(tf: Any, serving_fn: Any, base: str) -> tuple[Any | None, str]:
    """Our LatestExporter built from its signature, or (None, why not)."""
    try:
        from cloud_exporter import estimator as ours_module
    except Exception as exc:  # not written yet, or broken: report, do not fail the run
        return None, f"cloud_exporter.estimator is not importable ({type(exc).__name__}: {exc})"
    cls = getattr(ours_module, "LatestExporter", None)
    if cls is None:
        return None, "cloud_exporter.estimator has no LatestExporter"
    params = inspect.signature(cls).parameters
    kwargs: dict[str, Any] = {}
    for key in BASE_PARAMS:  # only if it must be given: by default exports go where stock's do
        if key in params and params[key].default is inspect.Parameter.empty:
            kwargs[key] = base
            break
    for key in ("exports_to_keep", "keep"):
        if key in params:
            kwargs[key] = 5
            break
    try:
        exporter = cls("ours", serving_fn, **kwargs)
    except Exception as exc:
        return None, f"could not build LatestExporter{inspect.signature(cls)}: {exc}"
    if not isinstance(exporter, tf.estimator.Exporter):
        return None, "cloud_exporter.estimator.LatestExporter is not a tf.estimator.Exporter"
    given = ", ".join(f"{k}={v!r}" for k, v in sorted(kwargs.items())) or "no extra arguments"
    return exporter, f"cloud_exporter.estimator.LatestExporter with {given}"


def dir_bytes(root: str) -> int:
    return sum(
        os.path.getsize(os.path.join(d, n)) for d, _dirs, names in os.walk(root) for n in names
    )


def main(workdir: str, evals: int) -> dict[str, Any]:
    import numpy as np
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")
    feature = tf.feature_column.numeric_column("x", shape=[FEATURES])
    model_dir = os.path.join(workdir, "model")
    steps = 20
    config = tf.estimator.RunConfig(
        model_dir=model_dir,
        save_checkpoints_steps=steps,
        keep_checkpoint_max=2,
        log_step_count_steps=10_000,
        tf_random_seed=0,
    )
    estimator = tf.estimator.DNNRegressor(
        hidden_units=[WIDTH, WIDTH], feature_columns=[feature], config=config
    )
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4096, FEATURES)).astype("float32")
    y = (x @ rng.normal(size=(FEATURES, 1))).astype("float32")

    def input_fn() -> Any:
        return tf.data.Dataset.from_tensor_slices(({"x": x}, y)).repeat().batch(64)

    serving_fn = tf.estimator.export.build_parsing_serving_input_receiver_fn(
        tf.feature_column.make_parse_example_spec([feature])
    )
    export_root = os.path.join(model_dir, "export")
    stock = tf.estimator.LatestExporter("stock", serving_fn, exports_to_keep=5)
    ours, how = make_ours(tf, serving_fn, os.path.join(export_root, "ours"))
    pair = [stock] + ([ours] if ours is not None else [])
    times: dict[str, list[float]] = {e.name: [] for e in pair}
    last_second: dict[str, int] = {}

    class Interleaved(tf.estimator.Exporter):
        calls = 0

        @property
        def name(self) -> str:
            return "interleaved"

        def export(
            self,
            estimator: Any,
            export_path: str,
            checkpoint_path: str,
            eval_result: Any,
            is_the_final_export: bool,
        ) -> Any:
            order = pair if Interleaved.calls % 2 == 0 else pair[::-1]
            Interleaved.calls += 1
            for exporter in order:
                while int(time.time()) == last_second.get(exporter.name):
                    time.sleep(0.01)
                last_second[exporter.name] = int(time.time())
                start = time.perf_counter()
                exporter.export(
                    estimator,
                    os.path.join(export_root, exporter.name),
                    checkpoint_path,
                    eval_result,
                    is_the_final_export,
                )
                times[exporter.name].append(time.perf_counter() - start)
            return None

    tf.estimator.train_and_evaluate(
        estimator,
        tf.estimator.TrainSpec(input_fn, max_steps=steps * evals),
        tf.estimator.EvalSpec(
            input_fn, steps=5, exporters=[Interleaved()], throttle_secs=0, start_delay_secs=0
        ),
    )
    stock_dirs = [d for d in os.listdir(os.path.join(export_root, "stock")) if d.isdigit()]
    return {
        "tf_version": tf.__version__,
        "stock": times["stock"],
        "ours": times.get("ours"),
        "ours_how": how,
        "export_bytes": dir_bytes(os.path.join(export_root, "stock", max(stock_dirs))),
    }


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], int(sys.argv[2]))))
