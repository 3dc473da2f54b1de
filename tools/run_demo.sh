#!/usr/bin/env bash
# The main job: set-up (tools/setup_env.sh, idempotent), then train CorrRetinaNet (ResNet-18/GN
# from scratch, Spearman Correlation Loss, λ = 0.1) on the raccoon dataset for 300 iterations on
# the CPU and report COCO box AP on its validation split. About 2 minutes on 2 cores.
# Extra arguments go to train_net.py, e.g. `bash tools/run_demo.sh MODEL.CORR_LOSS.WEIGHT 0.0`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/tools/setup_env.sh"
cd "$ROOT"
exec "${CORRLOSS_VENV:-$ROOT/.venv}/bin/python" train_net.py \
  --config-file configs/CPU/retinanet_R_18_FPN_raccoon_scratch.yaml "$@"
