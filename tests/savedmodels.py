"""Source trees for tests: SavedModel-shaped directories without TensorFlow, and real ones."""

from __future__ import annotations

import os
from pathlib import Path


def fake_saved_model(path: Path | str, seed: int = 0, shard_bytes: int = 4096) -> Path:
    """A directory shaped like a SavedModel (saved_model.pb, variables/, assets/).

    Contents depend on ``seed`` so two models differ byte-for-byte.
    """
    root = Path(path)
    (root / "variables").mkdir(parents=True, exist_ok=True)
    (root / "assets").mkdir(exist_ok=True)
    pattern = f"seed={seed};".encode()
    payload = (pattern * (shard_bytes // len(pattern) + 1))[:shard_bytes]
    (root / "variables" / "variables.data-00000-of-00001").write_bytes(payload)
    (root / "variables" / "variables.index").write_bytes(f"index {seed}".encode())
    (root / "assets" / "vocab.txt").write_text(f"a\nb\n{seed}\n")
    (root / "fingerprint.pb").write_bytes(os.urandom(16))
    (root / "saved_model.pb").write_bytes(f"graph {seed}".encode())
    return root


def tree(root: Path | str) -> dict[str, bytes]:
    """{relative posix path: bytes} of every file below ``root``."""
    base = Path(root)
    return {
        p.relative_to(base).as_posix(): p.read_bytes()
        for p in sorted(base.rglob("*"))
        if p.is_file()
    }


def write_object(fs, path: str, data: bytes) -> None:
    """Write an object (creating parent directories on local disk)."""
    parent = path.rsplit("/", 1)[0]
    if "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)):
        fs.makedirs(parent, exist_ok=True)
    fs.pipe_file(path, data)
