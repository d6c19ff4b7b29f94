#!/usr/bin/env bash
# Set up the venvs, then run every check and print a summary; exit non-zero if any step failed.
#
#   ruff              ruff check and ruff format --check on the source folders (main venv)
#   pytest-main       pytest tests --ignore=tests/estimator (main venv)
#   pytest-estimator  pytest tests/estimator (estimator venv), when that folder exists
#   checkov           checkov -d terraform, offline (checkov venv), when terraform/ exists
#   install           scripts/install_test.sh: wheel/sdist installed as a user does (cached venvs)
#
# pytest-estimator and install run in the background beside pytest-main (their own venvs,
# servers on their own free ports, their own pytest temp roots); their output is printed when
# they are done. CLOUD_EXPORTER_SERIAL=1 runs every step one after the other instead.
#
# Usage: scripts/test.sh [PYTEST ARGS...]   e.g. scripts/test.sh -x -k commit
# Extra arguments go to both pytest runs. CLOUD_EXPORTER_SOAK=1 selects the longer test runs.
# pytest's exit code 5 (no tests collected) counts as a failure.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 2
VENV_ROOT="$ROOT/.venv"
START=$(date +%s.%N)

STEP_NAMES=()
STEP_RESULTS=()
STEP_TIMES=()

say() { printf '[test] %s\n' "$*"; }
elapsed_since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1fs", b - a }'; }

# run_step NAME COMMAND...: run COMMAND, record its status, never stop the script.
run_step() {
    local name="$1" start status result
    shift
    printf '\n[test] ===== %s: %s\n' "$name" "$*"
    start=$(date +%s.%N)
    "$@"
    status=$?
    case $status in
    0) result="passed" ;;
    5) result="FAILED (no tests collected)" ;;
    *) result="FAILED (exit $status)" ;;
    esac
    record "$name" "$result" "$(elapsed_since "$start")"
}

BG_NAMES=()
BG_PIDS=()
BG_LOGS=()

# start_beside NAME COMMAND...: run COMMAND in the background (or now, with
# CLOUD_EXPORTER_SERIAL=1), its output in a log of its own; finish_beside collects it.
start_beside() {
    local name="$1" log="$VENV_ROOT/test-$1.log"
    shift
    if [[ "${CLOUD_EXPORTER_SERIAL:-0}" == 1 ]]; then
        run_step "$name" "$@"
        return
    fi
    printf '
[test] ===== %s: %s (in the background, output below when done)
' "$name" "$*"
    (
        start=$(date +%s.%N)
        export PYTEST_DEBUG_TEMPROOT="$VENV_ROOT/tmp-$name"  # no shared pytest-of-<user>
        rm -rf "$PYTEST_DEBUG_TEMPROOT" && mkdir -p "$PYTEST_DEBUG_TEMPROOT"
        "$@" >"$log" 2>&1
        echo $? >"$log.status"
        elapsed_since "$start" >"$log.time"
    ) &
    BG_NAMES+=("$name")
    BG_PIDS+=("$!")
    BG_LOGS+=("$log")
}

finish_beside() {
    local i status result log
    for i in "${!BG_NAMES[@]}"; do
        wait "${BG_PIDS[$i]}"
        log="${BG_LOGS[$i]}"
        printf '
[test] ===== %s (ran in the background)
' "${BG_NAMES[$i]}"
        cat "$log"
        status="$(cat "$log.status" 2>/dev/null || echo 1)"
        case $status in
        0) result="passed" ;;
        5) result="FAILED (no tests collected)" ;;
        *) result="FAILED (exit $status)" ;;
        esac
        record "${BG_NAMES[$i]}" "$result" "$(cat "$log.time" 2>/dev/null || echo '?')"
    done
}

record() {
    STEP_NAMES+=("$1")
    STEP_RESULTS+=("$2")
    STEP_TIMES+=("$3")
}

summary() {
    local i failed=0
    printf '\n[test] ===== summary\n'
    printf '  %-18s %-30s %s\n' STEP STATUS TIME
    for i in "${!STEP_NAMES[@]}"; do
        printf '  %-18s %-30s %s\n' "${STEP_NAMES[$i]}" "${STEP_RESULTS[$i]}" "${STEP_TIMES[$i]}"
        [[ "${STEP_RESULTS[$i]}" == passed ]] || failed=1
    done
    printf '[test] total wall time: %s (CLOUD_EXPORTER_SOAK=%s)\n' \
        "$(elapsed_since "$START")" "${CLOUD_EXPORTER_SOAK:-0}"
    return $failed
}

ruff_targets() {
    local dir
    for dir in cloud_exporter tests benchmarks examples scripts; do
        [[ -d "$dir" ]] && printf '%s\n' "$dir"
    done
}

run_ruff() {
    local targets
    mapfile -t targets < <(ruff_targets)
    "$VENV_ROOT/main/bin/ruff" check "${targets[@]}" &&
        "$VENV_ROOT/main/bin/ruff" format --check "${targets[@]}"
}

run_pytest_main() {
    "$VENV_ROOT/main/bin/python" -m pytest tests --ignore=tests/estimator "$@"
}

run_pytest_estimator() {
    "$VENV_ROOT/estimator/bin/python" -m pytest tests/estimator "$@"
}

run_checkov() {
    if [[ ! -x "$VENV_ROOT/checkov/bin/checkov" ]]; then
        say "terraform/ exists but there is no checkov venv (requirements/checkov.txt missing?)"
        return 1
    fi
    # --skip-download: scan offline (otherwise checkov asks its vendor's service for guidelines).
    "$VENV_ROOT/checkov/bin/checkov" -d terraform --compact --quiet --skip-download
}

main() {
    say "setup"
    local setup_start
    setup_start=$(date +%s.%N)
    if ! bash "$ROOT/scripts/setup.sh"; then
        record setup "FAILED" "$(elapsed_since "$setup_start")"
        summary
        exit 1
    fi
    record setup passed "$(elapsed_since "$setup_start")"

    run_step ruff run_ruff
    if [[ -f scripts/install_test.sh ]]; then
        start_beside install bash scripts/install_test.sh -q
    fi
    if [[ -d tests/estimator ]]; then
        start_beside pytest-estimator run_pytest_estimator "$@"
    fi
    run_step pytest-main run_pytest_main "$@"
    if [[ -d terraform ]]; then
        run_step checkov run_checkov
    fi
    finish_beside
    summary
}

main "$@"
