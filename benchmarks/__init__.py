"""Benchmark suite for cloud_exporter: ``python -m benchmarks`` (see docs/performance.md).

Measures publishes against their baselines on the moto S3 server, fake-gcs-server and local
disk in one run, interleaved, and prints a markdown report with the machine it ran on. Never
imported by the library or the unit tests; timing lives here only.
"""

from __future__ import annotations

from .env import servers

servers()  # tests/servers.py sets the emulator environment before anything imports gcsfs
