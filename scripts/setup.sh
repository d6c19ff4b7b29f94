#!/usr/bin/env bash
# Create or refresh the project's virtual environments under .venv/ (idempotent).
#
#   .venv/main       current TensorFlow + storage stack + test servers + tools; project installed -e
#   .venv/estimator  TensorFlow 2.15 + tf.estimator + the same storage stack; project installed -e
#   .venv/checkov    infrastructure scanner (only when requirements/checkov.txt exists)
#
# Usage: scripts/setup.sh [--only NAME[,NAME...]]      (NAME: main, estimator, checkov)
#
# A venv whose stamp (hash of its requirements, pyproject.toml, the interpreter and this script's
# recipe version) matches is skipped. Each step prints one line; pip output goes to .venv/NAME.log
# and is printed when a step fails.
set -euo pipefail

RECIPE_VERSION=1
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV_ROOT="$ROOT/.venv"
STAMP_NAME=".cloud-exporter-setup-stamp"
ALL_VENVS=(main estimator checkov)
# pip prints one harmless line per package for index locations that do not exist on this machine.
NOISE_PATTERN="^WARNING: Location '.*' is ignored"

export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 PIP_PROGRESS_BAR=off

say() { printf '[setup] %s\n' "$*"; }
die() {
    printf '[setup] ERROR: %s\n' "$*" >&2
    exit 1
}
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1fs", b - a }'; }

usage() {
    sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

# ---------------------------------------------------------------------------------------------
# Arguments
# ---------------------------------------------------------------------------------------------
parse_args() {
    SELECTED=()
    while (($#)); do
        case "$1" in
        --only)
            [[ $# -ge 2 ]] || die "--only needs a venv name (main, estimator, checkov)"
            IFS=',' read -r -a names <<<"$2"
            SELECTED+=("${names[@]}")
            shift 2
            ;;
        --only=*)
            IFS=',' read -r -a names <<<"${1#--only=}"
            SELECTED+=("${names[@]}")
            shift
            ;;
        -h | --help)
            usage
            exit 0
            ;;
        *) die "unknown argument: $1 (see --help)" ;;
        esac
    done
    local name
    for name in "${SELECTED[@]}"; do
        [[ " ${ALL_VENVS[*]} " == *" $name "* ]] || die "unknown venv '$name' (main, estimator, checkov)"
    done
    if ((${#SELECTED[@]} == 0)); then
        SELECTED=(main estimator)
        [[ -f "$ROOT/requirements/checkov.txt" ]] && SELECTED+=(checkov)
    fi
    return 0
}

# ---------------------------------------------------------------------------------------------
# Interpreter
# ---------------------------------------------------------------------------------------------
# Python 3.11 exactly: TensorFlow 2.15 (estimator venv) stops at 3.11, and the main venv's pins
# (Keras 3.15, numpy 2.4) need 3.11 or later.
is_supported_python() {
    "$1" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)' >/dev/null 2>&1
}

find_python() {
    local cand
    for cand in python3.11 python3; do
        if command -v "$cand" >/dev/null 2>&1 && is_supported_python "$cand"; then
            "$cand" -c 'import sys; print(sys.executable)'
            return 0
        fi
    done
    return 1
}

apt_install() {
    command -v apt-get >/dev/null 2>&1 && [[ $(id -u) == 0 ]] || return 1
    say "installing $* with apt-get"
    {
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"
    } >>"$VENV_ROOT/apt.log" 2>&1
}

choose_python() {
    PYTHON="$(find_python)" ||
        { apt_install python3.11 python3.11-venv && PYTHON="$(find_python)"; } ||
        die "no Python 3.11 found (python3.11 or python3): install python3.11 and python3.11-venv"
    if ! "$PYTHON" -c 'import ensurepip, venv' >/dev/null 2>&1; then
        local minor
        minor="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
        apt_install "python$minor-venv" ||
            die "$PYTHON has no venv/ensurepip module: install python$minor-venv and retry"
    fi
    PYTHON_VERSION="$("$PYTHON" -c 'import sys; print(sys.version.split()[0])')"
    say "python: $PYTHON ($PYTHON_VERSION)"
}

# ---------------------------------------------------------------------------------------------
# Steps
# ---------------------------------------------------------------------------------------------
show_log() {
    local log="$1" lines
    lines=$(wc -l <"$log")
    printf '%s\n' "----- $log (last 200 of $lines lines) -----" >&2
    tail -n 200 "$log" >&2
    printf '%s\n' "----- end of $log -----" >&2
}

# run_step VENV LABEL COMMAND...: run COMMAND with its output (minus pip noise) in VENV's log.
run_step() {
    local venv="$1" label="$2" log="$VENV_ROOT/$1.log" start status
    shift 2
    start=$(now)
    printf '\n===== %s: %s\n+ %s\n' "$venv" "$label" "$*" >>"$log"
    set +e
    "$@" 2>&1 | sed -u "/$NOISE_PATTERN/d" >>"$log"
    status=${PIPESTATUS[0]}
    set -e
    if ((status != 0)); then
        say "$venv: $label ... FAILED after $(elapsed "$start") (exit $status)"
        show_log "$log"
        die "$venv: $label failed; full log: $log"
    fi
    say "$venv: $label ... ok ($(elapsed "$start"))"
}

requirements_for() { printf '%s/requirements/%s.txt\n' "$ROOT" "$1"; }
installs_project() { [[ "$1" == main || "$1" == estimator ]]; }

compute_stamp() {
    local venv="$1"
    {
        printf 'recipe %s\npython %s\nroot %s\n' "$RECIPE_VERSION" "$PYTHON_VERSION" "$ROOT"
        cat "$(requirements_for "$venv")"
        if installs_project "$venv"; then cat "$ROOT/pyproject.toml"; fi
    } | sha256sum | cut -d' ' -f1
}

venv_python_version() {
    "$1/bin/python" -c 'import sys; print(sys.version.split()[0])' 2>/dev/null || true
}

create_venv() {
    local venv="$1" dir="$VENV_ROOT/$1"
    rm -rf "$dir"
    run_step "$venv" "create venv" "$PYTHON" -m venv "$dir"
    run_step "$venv" "upgrade pip" "$dir/bin/python" -m pip install --upgrade pip
}

setup_venv() {
    local venv="$1" dir="$VENV_ROOT/$1" req stamp start
    req="$(requirements_for "$venv")"
    [[ -f "$req" ]] || die "$venv: missing ${req#"$ROOT"/}"
    stamp="$(compute_stamp "$venv")"
    if [[ -x "$dir/bin/python" && -f "$dir/$STAMP_NAME" && "$(cat "$dir/$STAMP_NAME")" == "$stamp" ]]; then
        say "$venv: up to date (skipped)"
        return 0
    fi
    start=$(now)
    : >"$VENV_ROOT/$venv.log"
    rm -f "$dir/$STAMP_NAME"
    if [[ "$(venv_python_version "$dir")" != "$PYTHON_VERSION" ]]; then
        create_venv "$venv"
    fi
    run_step "$venv" "install ${req#"$ROOT"/}" "$dir/bin/python" -m pip install -r "$req"
    if installs_project "$venv"; then
        run_step "$venv" "install project (-e .)" "$dir/bin/python" -m pip install -e "$ROOT"
    fi
    run_step "$venv" "check dependencies" "$dir/bin/python" -m pip check
    printf '%s\n' "$stamp" >"$dir/$STAMP_NAME"
    say "$venv: ready in $(elapsed "$start")"
}

lock_setup() {
    command -v flock >/dev/null 2>&1 || return 0
    exec 9>"$VENV_ROOT/.setup.lock"
    flock 9
}

main() {
    parse_args "$@"
    local start venv
    start=$(now)
    mkdir -p "$VENV_ROOT"
    lock_setup
    choose_python
    for venv in "${SELECTED[@]}"; do
        setup_venv "$venv"
    done
    say "done in $(elapsed "$start")"
}

main "$@"
