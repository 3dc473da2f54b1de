#!/usr/bin/env bash
# The demo, from a bare checkout: set-up (tools/setup_env.sh, idempotent), then on the embedded
# generated dataset "shapes" (drawn and cached on first use, no download) train CorrRetinaNet
# twice with the same recipe, seed and iterations -- baseline (λ = 0) and Spearman Correlation
# Loss (λ = 0.1) -- evaluate both on the held-out split, and print COCO box AP and the correlation
# measures side by side, with where the figures went (output/demo/report). CPU only.
# Arguments go to tools/compare_correlation.py, e.g. `bash tools/run_demo.sh --seeds 0 1 2` or
# `bash tools/run_demo.sh SOLVER.MAX_ITER 1000`. About 8 minutes on 2 CPU cores after set-up.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/tools/setup_env.sh"
cd "$ROOT"
exec "${CORRLOSS_VENV:-$ROOT/.venv}/bin/python" tools/compare_correlation.py "$@"
