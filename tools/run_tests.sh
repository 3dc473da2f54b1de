#!/usr/bin/env bash
# Sets up the environment (tools/setup_env.sh, idempotent) and runs the test suite.
# Extra arguments go to pytest, e.g. `bash tools/run_tests.sh -k correlation`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/tools/setup_env.sh"
cd "$ROOT"
exec "${CORRLOSS_VENV:-$ROOT/.venv}/bin/python" -m pytest tests "$@"
