#!/usr/bin/env bash
# Set up the main venv (only) and run the project's demo: scripts/demo.sh [DEMO ARGS...]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash "$ROOT/scripts/setup.sh" --only main
exec "$ROOT/.venv/main/bin/cloud-exporter" demo "$@"
