#!/usr/bin/env bash
# Sets up the environment (tools/setup_env.sh, idempotent) and runs the test suite, in as many
# pytest-xdist workers as there are cores (at most 4; CORRLOSS_TEST_WORKERS overrides, 0 = none).
# Extra arguments go to pytest, e.g. `bash tools/run_tests.sh -k correlation` or `-m "not slow"`.
#
# Flake finder: `bash tools/run_tests.sh --repeat N [pytest arguments]` runs the suite N times,
# each time in another shuffled order (tests/conftest.py --shuffle-seed; the seeds are printed,
# so that a failing order can be run again with --shuffle-seed S), and ends with one line per
# round; it fails if any round failed. E.g. `--repeat 3 -m slow` repeats the trainings only.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REPEAT=0
if [ "${1:-}" = "--repeat" ]; then
    if ! [[ "${2:-}" =~ ^[1-9][0-9]*$ ]]; then
        echo "run_tests.sh: --repeat needs a number of rounds >= 1 (got '${2:-}')" >&2
        exit 2
    fi
    REPEAT="$2"
    shift 2
fi
bash "$ROOT/tools/setup_env.sh"
cd "$ROOT"
WORKERS="${CORRLOSS_TEST_WORKERS:-$(nproc)}"
[ "$WORKERS" -le 4 ] || WORKERS=4
PYTHON="${CORRLOSS_VENV:-$ROOT/.venv}/bin/python"
# tests/conftest.py schedules the tests a few at a time to each worker (the slow ones, sorted
# first, spread over all of them), the modules that share a module fixture each on one worker.
if [ "$REPEAT" -eq 0 ]; then
    exec "$PYTHON" -m pytest -n "$WORKERS" tests "$@"
fi
FIRST_SEED="${CORRLOSS_SHUFFLE_SEED:-$RANDOM}"
SUMMARY=()
FAILED=0
for ((round = 1; round <= REPEAT; round++)); do
    SEED=$((FIRST_SEED + round - 1))
    echo "[run_tests] round $round of $REPEAT: --shuffle-seed $SEED"
    if "$PYTHON" -m pytest -n "$WORKERS" tests --shuffle-seed "$SEED" "$@"; then
        SUMMARY+=("round $round (--shuffle-seed $SEED): passed")
    else
        SUMMARY+=("round $round (--shuffle-seed $SEED): FAILED")
        FAILED=1
    fi
done
printf '[run_tests] %s\n' "${SUMMARY[@]}"
exit "$FAILED"
