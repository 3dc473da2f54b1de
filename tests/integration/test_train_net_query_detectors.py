"""The query-based detectors (CorrSparseRCNN, CorrDINO) through train_net.py on real data
(raccoon): training lowers the loss and logs ρ per stage or decoder layer, evaluation gives COCO
box metrics, two GLOO processes train with mixed matching, and a diverging run stops with
FloatingPointError without saving NaN weights."""

import glob
import math
import os

import pytest
import torch

from tests.tiny import FAST, REPO

pytestmark = pytest.mark.slow

CONFIG = os.path.join(REPO, "configs", "CPU", "sparse_rcnn_R_18_FPN_raccoon_scratch.yaml")
CONFIGS = {
    "CorrSparseRCNN": CONFIG,
    "CorrDINO": os.path.join(REPO, "configs", "CPU", "dino_R_18_4scale_raccoon_scratch.yaml"),
}
# Two stages (decoder layers) of a narrower model; their loss and ρ suffixes.
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
SUFFIXES = {"CorrSparseRCNN": ["_stage0", "_stage1"], "CorrDINO": ["_layer0", "_layer1"]}
# Total loss after 40 iterations relative to after 20, at SEED 0 on raccoon. Over seeds the ratio
# spreads widely (Sparse R-CNN, seeds 0, 1, 2: 0.66, 0.71, 0.52; an unseeded run gave 0.83;
# DINO, seed 0: 0.80, its denoising and encoder losses included).
LOSS_RATIO = {"CorrSparseRCNN": 0.8, "CorrDINO": 0.9}


@pytest.mark.parametrize("arch", list(CONFIGS))
def test_query_detector_trains_on_raccoon_and_evaluates(arch, tmp_path, train_net, metrics):
    out = str(tmp_path / "out")
    train_net(
        "--config-file",
        CONFIGS[arch],
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
    losses = [r["total_loss"] for r in records if "total_loss" in r]
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses)
    assert losses[-1] < LOSS_RATIO[arch] * losses[0], losses
    trained = [r for r in records if "total_loss" in r]
    assert all(
        f"loss_corr{s}" in r and f"corr/rho{s}" in r for r in trained for s in SUFFIXES[arch]
    )
    final = records[-1]
    assert all(math.isfinite(final[k]) for k in ["bbox/AP", "bbox/AP50", "bbox/AP75"]), final
    assert final["bbox/AP50"] > 0, final


@pytest.mark.parametrize(
    "arch,mixed_matching",
    [
        ("CorrSparseRCNN", ["MODEL.SPARSE_RCNN.ONE_TO_MANY_K", "2"]),
        ("CorrDINO", ["MODEL.DINO.ONE_TO_MANY_K", "2"]),
    ],
)
def test_two_process_cpu_training_with_mixed_matching(
    arch, mixed_matching, tmp_path, train_net, metrics
):
    """Every parameter must get a gradient (DDP without find_unused_parameters), and the ground-
    truth normaliser and the gathered correlation run across both processes."""
    out = str(tmp_path / "out")
    log = train_net(
        "--num-gpus",
        "2",
        "--dist-url",
        "auto",  # a free port: other multi-process tests may run beside this one
        "--config-file",
        CONFIGS[arch],
        *FAST,
        "SOLVER.MAX_ITER",
        "4",
        "SOLVER.IMS_PER_BATCH",
        "4",
        "MODEL.CORR_LOSS.GATHER_ACROSS_PROCESSES",
        "True",
        *SMALLER[arch],
        *mixed_matching,
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


def test_diverging_run_stops_with_floating_point_error_and_saves_no_nan_weights(
    tmp_path, train_net, metrics
):
    out = str(tmp_path / "out")
    result = train_net(
        "--config-file",
        CONFIG,
        *FAST,
        "SOLVER.BASE_LR",
        "1000.0",
        "SOLVER.MAX_ITER",
        "20",
        "SOLVER.CHECKPOINT_PERIOD",
        "1",
        "MODEL.SPARSE_RCNN.NUM_STAGES",
        "2",
        "DATASETS.TEST",
        "()",
        "OUTPUT_DIR",
        out,
        cwd=tmp_path,
        expect_failure=True,
    )
    assert "FloatingPointError" in result and "at iteration" in result
    assert "Lower SOLVER.BASE_LR" in result or "Loss became infinite or NaN" in result
    checkpoints = glob.glob(os.path.join(out, "*.pth"))
    assert not os.path.exists(os.path.join(out, "model_final.pth"))
    for path in checkpoints:
        weights = torch.load(path, map_location="cpu", weights_only=False)["model"]
        assert all(torch.isfinite(t).all() for t in weights.values() if t.is_floating_point()), path
