#!/usr/bin/env bash
# Sets up the environment (tools/setup_env.sh, idempotent) and runs the test suite, in as many
# pytest-xdist workers as there are cores (at most 4; CORRLOSS_TEST_WORKERS overrides, 0 = none).
# Extra arguments go to pytest, e.g. `bash tools/run_tests.sh -k correlation` or `-m "not slow"`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/tools/setup_env.sh"
cd "$ROOT"
WORKERS="${CORRLOSS_TEST_WORKERS:-$(nproc)}"
[ "$WORKERS" -le 4 ] || WORKERS=4
# tests/conftest.py schedules the tests a few at a time to each worker (the slow ones, sorted
# first, spread over all of them), the modules that share a module fixture each on one worker.
exec "${CORRLOSS_VENV:-$ROOT/.venv}/bin/python" -m pytest -n "$WORKERS" tests "$@"
