"""What gets published: run profiles, the synthetic SavedModel-shaped tree, a real Keras export."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass

from .env import REPO

MiB = 1 << 20
KiB = 1 << 10


@dataclass(frozen=True)
class TreeSpec:
    """A SavedModel-shaped tree: one large variables shard, a few medium files, many small ones."""

    shard_bytes: int
    medium_count: int
    medium_bytes: int
    small_count: int
    small_bytes: int

    # saved_model.pb, fingerprint.pb, variables.index: fixed, small.
    FIXED = (
        ("saved_model.pb", 256 * KiB),
        ("fingerprint.pb", 64),
        ("variables/variables.index", 16 * KiB),
    )

    @property
    def file_count(self) -> int:
        return len(self.FIXED) + 1 + self.medium_count + self.small_count

    @property
    def total_bytes(self) -> int:
        fixed = sum(size for _, size in self.FIXED)
        return (
            fixed
            + self.shard_bytes
            + self.medium_count * self.medium_bytes
            + self.small_count * self.small_bytes
        )

    def describe(self) -> str:
        return (
            f"{self.file_count} files, {self.total_bytes / MiB:.0f} MiB: shard "
            f"{self.shard_bytes / MiB:.0f} MiB, {self.medium_count} x "
            f"{self.medium_bytes / MiB:.0f} MiB, {self.small_count} x "
            f"{self.small_bytes / KiB:.0f} KiB"
        )


@dataclass(frozen=True)
class Profile:
    """Sizes and repetition counts of one run mode (--quick, default, --large)."""

    name: str
    tree: TreeSpec
    reps: int
    keras_reps: int
    local_reps: int
    memory_shard_bytes: int  # the single large file of the memory probe
    request_exports: int  # E for the latest/prune request counts
    request_files: int  # SavedModel files per export in that base (the marker comes on top)
    list_exports: int  # exports in the base that `cloud-exporter list` reads
    cli_reps: int
    estimator_evals: int


PROFILES = {
    "quick": Profile(
        name="quick",
        tree=TreeSpec(48 * MiB, 3, 4 * MiB, 60, 4 * KiB),
        reps=3,
        keras_reps=3,
        local_reps=5,
        memory_shard_bytes=160 * MiB,
        request_exports=60,
        request_files=24,
        list_exports=1000,
        cli_reps=2,
        estimator_evals=4,
    ),
    "default": Profile(
        name="default",
        tree=TreeSpec(192 * MiB, 4, 8 * MiB, 200, 4 * KiB),
        reps=5,
        keras_reps=5,
        local_reps=7,
        memory_shard_bytes=512 * MiB,
        request_exports=100,
        request_files=25,
        list_exports=1000,
        cli_reps=3,
        estimator_evals=30,
    ),
    "large": Profile(
        name="large",
        tree=TreeSpec(2048 * MiB, 4, 64 * MiB, 1000, 4 * KiB),
        reps=3,
        keras_reps=3,
        local_reps=5,
        memory_shard_bytes=2048 * MiB,
        request_exports=200,
        request_files=25,
        list_exports=1000,
        cli_reps=3,
        estimator_evals=30,
    ),
}


def _write_random(path: str, size: int) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        left = size
        while left > 0:
            n = min(left, 8 * MiB)
            f.write(os.urandom(n))  # incompressible, like trained weights
            left -= n


def make_tree(root: str, spec: TreeSpec) -> str:
    """Write the synthetic SavedModel-shaped tree under ``root`` (reused if already complete)."""
    stamp = os.path.join(os.path.dirname(root), os.path.basename(root) + ".complete")
    if os.path.exists(stamp):
        return root
    for relpath, size in spec.FIXED:
        _write_random(os.path.join(root, relpath), size)
    _write_random(
        os.path.join(root, "variables", "variables.data-00000-of-00001"), spec.shard_bytes
    )
    for i in range(spec.medium_count):
        _write_random(os.path.join(root, "assets", f"medium-{i}.bin"), spec.medium_bytes)
    for i in range(spec.small_count):
        _write_random(os.path.join(root, "assets", "vocab", f"part-{i:05d}.txt"), spec.small_bytes)
    with open(stamp, "w") as f:
        f.write(spec.describe())
    return root


def make_memory_tree(root: str, shard_bytes: int) -> str:
    """One large shard plus the fixed small files: the worst case for buffering."""
    return make_tree(root, TreeSpec(shard_bytes, 0, 0, 8, 4 * KiB))


def tree_stats(root: str) -> tuple[int, int]:
    """(files, bytes) of a directory tree."""
    files = total = 0
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            files += 1
            total += os.path.getsize(os.path.join(dirpath, name))
    return files, total


def export_keras(dest: str) -> str:
    """Export a small real Keras model with ``model.export`` in a child process (keeps TF out)."""
    if os.path.exists(os.path.join(dest, "saved_model.pb")):
        return dest
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.keras_model", dest],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if proc.returncode != 0 or not os.path.exists(os.path.join(dest, "saved_model.pb")):
        tail = (proc.stderr or proc.stdout)[-2000:]
        raise RuntimeError(f"Keras export failed (exit {proc.returncode}):\n{tail}")
    return dest
