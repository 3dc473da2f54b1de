"""The query-based detectors (CorrSparseRCNN, CorrDINO) through train_net.py on real data
(raccoon): training lowers the loss and logs ρ per stage or decoder layer, evaluation gives COCO
box metrics, two GLOO processes train with mixed matching, and an infinite gradient stops
training with FloatingPointError without saving NaN weights."""

import glob
import math
import os

import pytest
import torch
from detectron2.engine import HookBase

from corrloss_d2.config import load_corrloss_config
from corrloss_d2.engine import CorrLossTrainer
from tests.architectures import ARCHITECTURES, names
from tests.tiny import FAST, REPO

pytestmark = pytest.mark.slow

QUERY_DETECTORS = names(where=lambda spec: spec.family == "query")
CONFIG = os.path.join(REPO, ARCHITECTURES["CorrSparseRCNN"].cpu_config)
# Two stages (decoder layers) of a narrower model.
SMALLER = {
    "CorrSparseRCNN": [
        "MODEL.SPARSE_RCNN.NUM_STAGES",
        "2",
        "MODEL.SPARSE_RCNN.NUM_PROPOSALS",
        "25",
        "TEST.DETECTIONS_PER_IMAGE",
        "25",
    ],
    "CorrDINO": [
        "MODEL.DINO.NUM_ENCODER_LAYERS",
        "2",
        "MODEL.DINO.NUM_DECODER_LAYERS",
        "2",
    ],
}
# What 40 iterations from scratch must show, as (ratio of the losses after 40 iterations to
# after 20, for the classification losses summed and for the total; the AP50 to exceed). The
# thresholds sit well beyond the spread over seeds 1-5 (2-core Intel Xeon; a seed changes the
# initialisation and the batches, a far larger change than another CPU's rounding): Sparse R-CNN
# classification 0.43-0.63, total 0.49-0.78, AP50 12-27; DINO classification 0.43-0.63 (its
# denoising and encoder losses included), while its box losses barely move yet (0.89-1.06, so
# total 0.87-1.00 and AP50 0-4.3: neither is a sign of learning at 40 iterations).
LEARNING = {"CorrSparseRCNN": (0.8, 0.9, 2.0), "CorrDINO": (0.8, None, None)}


@pytest.mark.parametrize("arch", QUERY_DETECTORS)
def test_query_detector_trains_on_raccoon_and_evaluates(arch, tmp_path, train_net, metrics):
    out = str(tmp_path / "out")
    train_net(
        "--config-file",
        os.path.join(REPO, ARCHITECTURES[arch].cpu_config),
        *FAST,
        "SEED",
        "0",
        "SOLVER.MAX_ITER",
        "40",
        "MODEL.CORR_LOSS.WEIGHT",
        "0.2",
        *SMALLER[arch],
        "OUTPUT_DIR",
        out,
        cwd=tmp_path,
    )
    records = metrics(out)
    trained = [r for r in records if "total_loss" in r]
    assert len(trained) == 2 and all(math.isfinite(r["total_loss"]) for r in trained)
    suffixes = ARCHITECTURES[arch].corr_suffixes(SMALLER[arch])
    assert all(f"loss_corr{s}" in r and f"corr/rho{s}" in r for r in trained for s in suffixes)
    classification = [sum(v for k, v in r.items() if k.startswith("loss_cls")) for r in trained]
    cls_ratio, total_ratio, min_ap50 = LEARNING[arch]
    assert classification[1] < cls_ratio * classification[0], trained
    if total_ratio is not None:
        assert trained[1]["total_loss"] < total_ratio * trained[0]["total_loss"], trained
    final = records[-1]
    assert all(math.isfinite(final[k]) for k in ["bbox/AP", "bbox/AP50", "bbox/AP75"]), final
    if min_ap50 is not None:
        assert final["bbox/AP50"] > min_ap50, final


@pytest.mark.parametrize("arch", QUERY_DETECTORS)
def test_two_process_cpu_training_with_mixed_matching(arch, tmp_path, train_net, metrics):
    """Every parameter must get a gradient (DDP without find_unused_parameters), and the ground-
    truth normaliser and the gathered correlation run across both processes."""
    out = str(tmp_path / "out")
    log = train_net(
        "--num-gpus",
        "2",
        "--dist-url",
        "auto",  # a free port: other multi-process tests may run beside this one
        "--config-file",
        os.path.join(REPO, ARCHITECTURES[arch].cpu_config),
        *FAST,
        "SOLVER.MAX_ITER",
        "4",
        "SOLVER.IMS_PER_BATCH",
        "4",
        "MODEL.CORR_LOSS.GATHER_ACROSS_PROCESSES",
        "True",
        *SMALLER[arch],
        f"{ARCHITECTURES[arch].node}.ONE_TO_MANY_K",
        "2",
        "MODEL.CLS_LOSS.TYPE",
        "ia_bce",
        "INPUT.TRAIN_AUGMENTATION",
        "sparse_rcnn",
        "INPUT.CROP.SIZE",
        "(100, 160)",
        "DATASETS.TEST",
        "()",
        "OUTPUT_DIR",
        out,
        cwd=tmp_path,
    )
    assert "World size: 2" in log
    records = [r for r in metrics(out) if "total_loss" in r]
    assert records and all(math.isfinite(r["total_loss"]) for r in records)
    assert records[-1]["iteration"] == 3


class InfiniteGradientAt(HookBase):
    """Makes every gradient of the model's first parameter +inf in iteration ``iteration`` while
    the loss stays finite: a divergence built, not hoped for (a huge learning rate may or may not
    overflow within a few steps, depending on the seed and on the CPU's rounding). Unrefused, the
    step writes NaN into the weights (AdamW: inf / sqrt(inf)) and the next checkpoint saves them."""

    def __init__(self, iteration):
        self.iteration, self.handle = iteration, None

    def before_step(self):
        if self.trainer.iter == self.iteration:
            parameter = next(self.trainer.model.parameters())
            self.handle = parameter.register_hook(lambda grad: torch.full_like(grad, math.inf))

    def after_step(self):
        if self.handle is not None:
            self.handle.remove()
            self.handle = None


def test_non_finite_gradient_stops_training_naming_the_iteration_and_saves_no_nan_weights(
    tmp_path, data_root
):
    """Sparse R-CNN's full-model clipping refuses the step of iteration 3 (the only place where
    an infinite gradient with a finite loss is caught), so the checkpoints of iterations 0-2
    are all there is, and finite. Holds on any CPU and any load: the infinite gradient is set,
    and the assertions read no trained value."""
    out = str(tmp_path / "out")
    cfg = load_corrloss_config(
        CONFIG,
        [
            *FAST,
            "SEED",
            "0",
            "SOLVER.MAX_ITER",
            "6",
            "SOLVER.CHECKPOINT_PERIOD",
            "1",
            "MODEL.SPARSE_RCNN.NUM_STAGES",
            "2",
            "DATASETS.TEST",
            "()",
            "OUTPUT_DIR",
            out,
        ],
    )
    trainer = CorrLossTrainer(cfg)
    trainer.register_hooks([InfiniteGradientAt(3)])
    with pytest.raises(
        FloatingPointError,
        match=r"the gradient norm became inf at iteration 3: training diverged\. "
        r"Lower SOLVER.BASE_LR",
    ):
        trainer.train()
    checkpoints = sorted(glob.glob(os.path.join(out, "*.pth")))
    assert [os.path.basename(p) for p in checkpoints] == [f"model_000000{i}.pth" for i in range(3)]
    for path in checkpoints:
        weights = torch.load(path, map_location="cpu", weights_only=False)["model"]
        assert all(torch.isfinite(t).all() for t in weights.values() if t.is_floating_point()), path
