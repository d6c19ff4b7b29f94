"""Local disk: the exporters commit TensorFlow's export by renaming it, with no second copy.

Run in the estimator venv: ``python -m pytest tests/estimator``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip(
    "tensorflow_estimator",
    reason="needs TF 2.15 with tensorflow-estimator: run tests/estimator in the estimator venv",
)
import tensorflow as tf
from tiny_estimator import input_fn, make_estimator, serving_input_receiver_fn

from cloud_exporter import list_exports, prune, verify_export
from cloud_exporter.estimator import FinalExporter, LatestExporter
from cloud_exporter.layout import ASSETS_EXTRA_DIRNAME, MARKER_NAME, STAGING_DIRNAME

pytestmark = [pytest.mark.estimator, pytest.mark.tensorflow]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, str]:
    """y = 2x + 1, trained long enough to predict it."""
    estimator = make_estimator(str(tmp_path_factory.mktemp("inplace") / "model"))
    estimator.train(lambda: input_fn(64, True), max_steps=40)
    return estimator, estimator.latest_checkpoint()


class Recording:
    """Wraps an estimator: records the inodes of what export_saved_model wrote, and what the
    base looked like to readers at that moment."""

    def __init__(self, estimator: Any, base: str, during: Any = None) -> None:
        self._estimator = estimator
        self._base = base
        self._during = during
        self.config = estimator.config
        self.inodes: dict[str, int] = {}
        self.written: list[str] = []

    def export_saved_model(self, export_dir_base: str, *args: Any, **kwargs: Any) -> Any:
        written = self._estimator.export_saved_model(export_dir_base, *args, **kwargs)
        path = written.decode()
        self.written.append(path)
        for dirpath, _dirs, names in os.walk(path):
            for name in names:
                full = os.path.join(dirpath, name)
                self.inodes[os.path.relpath(full, path)] = os.stat(full).st_ino
        if self._during is not None:
            self._during(path)
        return written


def _predict(directory: str) -> list[float]:
    loaded = tf.saved_model.load(directory)
    out = loaded.signatures["predict"](x=tf.constant([[0.0], [0.5]], tf.float32))
    return out["predictions"].numpy().ravel().tolist()


def test_latest_exporter_renames_the_export_into_place(trained, tmp_path: Path) -> None:
    estimator, ckpt = trained
    base = str(tmp_path / "exp[1] ü")  # glob characters and unicode in the base
    asset = tmp_path / "vocab.txt"
    asset.write_text("a\nb\n")
    seen_during: list[list[int]] = []
    recording = Recording(estimator, base, lambda _: seen_during.append(_versions(base)))
    exporter = LatestExporter(
        "latest", serving_input_receiver_fn, {"vocab.txt": str(asset)}, exports_to_keep=2
    )
    results = [
        exporter.export(recording, base, ckpt, {"loss": 0.1, "global_step": 40}, False)
        for _ in range(3)
    ]
    exports = list_exports(base)
    assert [e.uri.removeprefix("file://").encode() for e in exports] == results[1:]
    published = [int(os.path.basename(r.decode())) for r in results]
    assert seen_during == [[], published[:1], published[:2]]  # never a partial version
    latest = results[-1].decode()
    # The committed files are the very files TensorFlow wrote (same inodes): no copy was made.
    for relpath, inode in recording.inodes.items():
        assert os.stat(os.path.join(latest, relpath)).st_ino == inode, relpath
    assert recording.written[-1].startswith(os.path.join(base, STAGING_DIRNAME) + os.sep)
    info = verify_export(base, exports[-1].version, deep=True)
    assert f"{ASSETS_EXTRA_DIRNAME}/vocab.txt" in {f.path for f in info.files}
    assert (Path(latest) / ASSETS_EXTRA_DIRNAME / "vocab.txt").read_text() == "a\nb\n"
    assert info.metadata["global_step"] == 40
    loadable = shutil.copytree(latest, tmp_path / "load")  # TF globs "variables/variables*"
    assert _predict(str(loadable)) == pytest.approx([1.0, 2.0], abs=0.3)
    assert not (Path(base) / STAGING_DIRNAME).exists()  # claim and staging dir are gone


def _versions(base: str) -> list[int]:
    return [e.version for e in list_exports(base)] if os.path.isdir(base) else []


def test_a_failed_export_commits_nothing_and_leaves_no_litter(trained, tmp_path: Path) -> None:
    estimator, ckpt = trained
    base = str(tmp_path / "final")

    def die(path: str) -> None:
        assert os.path.isfile(os.path.join(path, "saved_model.pb"))
        raise RuntimeError("killed after TensorFlow wrote the export")

    exporter = FinalExporter("final", serving_input_receiver_fn)
    with pytest.raises(RuntimeError, match="killed"):
        exporter.export(Recording(estimator, base, die), base, ckpt, {"loss": 1.0}, True)
    assert not os.path.exists(base)  # the base did not exist before: nothing is left
    ok = exporter.export(estimator, base, ckpt, {"loss": 1.0}, True).decode()
    assert os.path.isfile(os.path.join(ok, MARKER_NAME))
    assert os.listdir(base) == [os.path.basename(ok)]


def test_a_crashed_export_is_invisible_and_prune_removes_it(trained, tmp_path: Path) -> None:
    """A process killed after TensorFlow wrote (simulated: claim and staging stay) is no
    export; prune removes its leftovers once they are older than grace_seconds."""
    estimator, ckpt = trained
    base = str(tmp_path / "crash")
    state: dict[str, Any] = {}

    def snapshot(path: str) -> None:
        state["listed"] = list_exports(base)
        state["files"] = sorted(p.name for p in (Path(base) / STAGING_DIRNAME).iterdir())
        raise KeyboardInterrupt  # a BaseException: the cleanup still runs

    exporter = LatestExporter("latest", serving_input_receiver_fn, exports_to_keep=3)
    with pytest.raises(KeyboardInterrupt):
        exporter.export(Recording(estimator, base, snapshot), base, ckpt, {"loss": 1.0}, False)
    assert state["listed"] == []
    claims = [n for n in state["files"] if n.endswith(".claim")]
    assert len(claims) == 1 and len(state["files"]) == 2  # the claim and its staging dir
    assert _versions(base) == []
    # Simulate the hard kill: the same leftovers, old; prune removes them.
    version = claims[0].removesuffix(".claim")
    staging = Path(base) / STAGING_DIRNAME
    staging.mkdir(parents=True, exist_ok=True)
    (staging / claims[0]).write_text("w")
    (staging / f"{version}-wdead" / "1700000000").mkdir(parents=True)
    (staging / f"{version}-wdead" / "1700000000" / "saved_model.pb").write_bytes(b"x")
    old = 1_000_000_000
    for path in staging.rglob("*"):
        os.utime(path, (old, old))
    report = prune(base, keep=3, grace_seconds=60)
    assert report.orphans_removed and not staging.exists()
