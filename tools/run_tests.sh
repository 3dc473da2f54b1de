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
# loadgroup: tests go to the workers a few at a time (the slow ones, sorted first, spread over
# all of them), except that a module marked xdist_group stays on one worker, so that its
# expensive module fixture runs once.
exec "${CORRLOSS_VENV:-$ROOT/.venv}/bin/python" -m pytest -n "$WORKERS" --dist loadgroup tests "$@"
