"""Importing the package and starting the CLI never import TensorFlow (or the cloud backends)."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("tensorflow", "keras", "s3fs", "gcsfs", "botocore")


@pytest.mark.parametrize(
    "code",
    [
        "import cloud_exporter",
        "import cloud_exporter.cli; cloud_exporter.cli._parser()",
        "import cloud_exporter.jobs, cloud_exporter.testing",
    ],
)
def test_no_heavy_imports(code):
    probe = f"{code}; import sys; print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_cli_help_lists_every_command():
    out = subprocess.run(
        [sys.executable, "-m", "cloud_exporter", "--help"], capture_output=True, text=True
    )
    assert out.returncode == 0
    for command in ("publish", "list", "latest", "verify", "prune", "gc", "demo"):
        assert command in out.stdout
