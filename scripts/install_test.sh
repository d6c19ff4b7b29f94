#!/usr/bin/env bash
# Install cloud-exporter as a user does and test it (tests/install/check_install.py):
#
#   1. build the sdist and a wheel (from that sdist) of this checkout     (.venv/install-build)
#   2. TF 2.15 venv: tensorflow-cpu 2.15.1 + tensorflow-estimator 2.15.0 first, then
#      "<wheel>[gcs,s3,estimator]"; record TF/numpy/protobuf before and check after  (.venv/install-tf215)
#   3. current TF venv: tensorflow-cpu (the main venv's pin) first, then "<wheel>[gcs,s3]"
#                                                                          (.venv/install-tfcur)
#   4. core venv: "pip install <sdist>" alone                              (.venv/install-core)
#   5. pytest tests/install/check_install.py in the main venv (it starts moto / fake-gcs-server)
#
# Each venv is cached by a stamp (recipe, pins, python, pyproject.toml); the checkout's code is
# reinstalled from the fresh build every run, without dependencies when the stamp matches.
# Usage: scripts/install_test.sh [PYTEST ARGS...]
# CLOUD_EXPORTER_MAIN_VENV: the venv that runs pytest and the servers (default .venv/main).
set -euo pipefail
unset PYTHONPATH PYTHONHOME VIRTUAL_ENV  # install and import exactly what a user would get

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV_ROOT="$ROOT/.venv"
DIST="$VENV_ROOT/install-dist"
RECIPE=1
TF_PINS=(tensorflow-cpu==2.15.1 tensorflow-estimator==2.15.0)
TF_CURRENT="$(grep -E '^tensorflow-cpu==' "$ROOT/requirements/main.txt")"
PYTHON="${PYTHON:-python3.11}"
MAIN_VENV="${CLOUD_EXPORTER_MAIN_VENV:-$VENV_ROOT/main}"

say() { printf '[install-test] %s\n' "$*"; }
quiet() { "$@" >>"$VENV_ROOT/install-test.log" 2>&1 || { tail -n 60 "$VENV_ROOT/install-test.log" >&2; return 1; }; }

stamp_of() {
    { printf 'recipe %s\n%s\n' "$RECIPE" "$*"; "$PYTHON" --version; cat "$ROOT/pyproject.toml"; } |
        sha256sum | cut -d' ' -f1
}

# fresh_venv NAME STAMP: true (and an empty venv) when NAME must be rebuilt.
fresh_venv() {
    local dir="$VENV_ROOT/$1"
    if [[ -x "$dir/bin/python" && -f "$dir/.stamp" && "$(cat "$dir/.stamp")" == "$2" ]]; then
        return 1
    fi
    rm -rf "$dir"
    quiet "$PYTHON" -m venv "$dir"
    return 0
}

mkdir -p "$VENV_ROOT"
: >"$VENV_ROOT/install-test.log"

build_stamp="$(stamp_of build)"
if fresh_venv install-build "$build_stamp"; then
    say "build venv"
    quiet "$VENV_ROOT/install-build/bin/pip" install build
    echo "$build_stamp" >"$VENV_ROOT/install-build/.stamp"
fi
rm -rf "$DIST"
say "building sdist and wheel"
quiet "$VENV_ROOT/install-build/bin/python" -m build --outdir "$DIST" "$ROOT"
WHEEL="$(ls "$DIST"/*.whl)"
SDIST="$(ls "$DIST"/*.tar.gz)"

tf_dir="$VENV_ROOT/install-tf215"
tf_stamp="$(stamp_of "${TF_PINS[@]}" gcs,s3,estimator)"
if fresh_venv install-tf215 "$tf_stamp"; then
    say "TF 2.15 venv: ${TF_PINS[*]}, then the wheel with [gcs,s3,estimator]"
    quiet "$tf_dir/bin/pip" install "${TF_PINS[@]}"
    "$tf_dir/bin/python" - >"$tf_dir/baseline.json" <<'PY'
import json
from importlib.metadata import version
print(json.dumps({n: version(n) for n in ("tensorflow-cpu", "numpy", "protobuf")}))
PY
    quiet "$tf_dir/bin/pip" install "$WHEEL[gcs,s3,estimator]"
    echo "$tf_stamp" >"$tf_dir/.stamp"
else
    say "TF 2.15 venv up to date; reinstalling the fresh wheel"
    quiet "$tf_dir/bin/pip" install --force-reinstall --no-deps "$WHEEL"
fi

cur_dir="$VENV_ROOT/install-tfcur"
cur_stamp="$(stamp_of "$TF_CURRENT" gcs,s3)"
if fresh_venv install-tfcur "$cur_stamp"; then
    say "current TF venv: $TF_CURRENT, then the wheel with [gcs,s3]"
    quiet "$cur_dir/bin/pip" install "$TF_CURRENT"
    quiet "$cur_dir/bin/pip" install "$WHEEL[gcs,s3]"
    echo "$cur_stamp" >"$cur_dir/.stamp"
else
    say "current TF venv up to date; reinstalling the fresh wheel"
    quiet "$cur_dir/bin/pip" install --force-reinstall --no-deps "$WHEEL"
fi

core_dir="$VENV_ROOT/install-core"
core_stamp="$(stamp_of core)"
if fresh_venv install-core "$core_stamp"; then
    say "core venv: the sdist alone"
    quiet "$core_dir/bin/pip" install "$SDIST"
    echo "$core_stamp" >"$core_dir/.stamp"
else
    say "core venv up to date; reinstalling the fresh sdist"
    quiet "$core_dir/bin/pip" install --force-reinstall --no-deps "$SDIST"
fi

say "running tests/install/check_install.py"
cd "$ROOT"
status=0
CLOUD_EXPORTER_TF215_PYTHON="$tf_dir/bin/python" \
    CLOUD_EXPORTER_TF215_BASELINE="$tf_dir/baseline.json" \
    CLOUD_EXPORTER_TFCUR_PYTHON="$cur_dir/bin/python" \
    CLOUD_EXPORTER_CORE_PYTHON="$core_dir/bin/python" \
    "$MAIN_VENV/bin/python" -m pytest tests/install/check_install.py "$@" || status=$?
if ((status != 0)); then  # a failed check may have left a venv changed: rebuild next time
    rm -f "$tf_dir/.stamp" "$cur_dir/.stamp" "$core_dir/.stamp"
fi
exit "$status"
