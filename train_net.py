#!/usr/bin/env python
"""Train and evaluate corrloss_d2 detectors (CorrRetinaNet, CorrFCOS, CorrATSS, CorrSparseRCNN,
CorrDINO, CorrYOLACT); flags, resuming and several processes: docs/training.md.

    python train_net.py --config-file configs/CPU/retinanet_R_18_FPN_raccoon_scratch.yaml
    python train_net.py --num-gpus 8 \
        --config-file projects/CorrelationLoss/configs/retinanet_R_50_FPN_1x_corr_spearman_0.1.yaml
    python train_net.py --config-file ... --eval-only MODEL.WEIGHTS output/.../model_final.pth

The trainer is :class:`corrloss_d2.engine.CorrLossTrainer`; subclass it (and pass it to
``corrloss_d2.engine.main``) to add hooks or evaluators of your own.
"""

from detectron2.engine import default_argument_parser

import corrloss_d2  # noqa: F401  (registers meta-architectures, backbones and datasets)
from corrloss_d2.engine import CorrLossTrainer, launch_main
from corrloss_d2.engine import main as train_or_evaluate


def main(args):
    return train_or_evaluate(args, CorrLossTrainer)


def invoke_main(argv=None) -> None:
    launch_main(main, default_argument_parser().parse_args(argv))


if __name__ == "__main__":
    invoke_main()
