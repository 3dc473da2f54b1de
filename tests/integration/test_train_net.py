"""train_net.py itself on real data (raccoon): training lowers the loss (ATSS, whose normaliser
needs no settling), evaluation gives COCO box metrics and the correlation measures, --eval-only
gives the same AP, two processes train with DDP. (RetinaNet through train_net.py, with its
evaluation: tests/integration/test_resume.py; each detector's loss going down in a few steps:
tests/modeling/test_meta_arch.py.)"""

import math
import os

import pytest

from tests.tiny import FAST, REPO, copypaste_box_ap

pytestmark = pytest.mark.slow


# FCOS's loss normaliser is an EMA of the positive count that starts at 300 (RetinaNet: 100), so
# its first ~60 iterations show the normaliser settling, not learning; its loss decrease is tested
# in tests/modeling/test_meta_arch.py with the normaliser preset. Here: a few iterations, the
# evaluation, and --eval-only of the saved weights.
def test_fcos_trains_evaluates_and_evaluates_its_weights_again(tmp_path, train_net, metrics):
    config = os.path.join(REPO, "configs", "CPU", "fcos_R_18_FPN_raccoon_scratch.yaml")
    out = str(tmp_path / "out")
    common = [*FAST, "MODEL.FCOS.SCORE_THRESH_TEST", "0.01", "SEED", "0", "OUTPUT_DIR", out]
    train_net("--config-file", config, "SOLVER.MAX_ITER", "10", *common, cwd=tmp_path)
    records = metrics(out)
    assert all(
        math.isfinite(r["total_loss"]) and "corr/rho" in r for r in records if "total_loss" in r
    )
    final = records[-1]
    assert all(math.isfinite(final[k]) for k in ["bbox/AP", "bbox/AP50", "bbox/AP75"]), final
    log = train_net(
        "--config-file",
        config,
        "--eval-only",
        "MODEL.WEIGHTS",
        os.path.join(out, "model_final.pth"),
        *common,
        cwd=tmp_path,
    )
    # The same weights evaluated again on this CPU, one image at a time: the same detections.
    assert copypaste_box_ap(log) == pytest.approx(final["bbox/AP"], abs=1e-3)


def test_atss_training_lowers_the_loss_and_evaluates(tmp_path, train_net, metrics):
    """40 iterations of CorrATSS (normalised by each iteration's positive count, no EMA to
    settle) lower its loss and already detect raccoons; the evaluation gives box AP and the
    correlation measures."""
    config = os.path.join(REPO, "configs", "CPU", "atss_R_18_FPN_raccoon_scratch.yaml")
    out = str(tmp_path / "out")
    log = train_net(
        "--config-file",
        config,
        "SOLVER.MAX_ITER",
        "40",
        *FAST,
        "MODEL.ATSS.SCORE_THRESH_TEST",
        "0.01",
        "SEED",
        "0",
        "OUTPUT_DIR",
        out,
        cwd=tmp_path,
    )
    records = metrics(out)
    losses = [r for r in records if "total_loss" in r]
    assert len(losses) == 2 and all("corr/rho" in r and "loss_corr" in r for r in losses)
    # Seeds 1-5 (2-core Intel Xeon): loss ratio 0.79-0.88, AP 14.7-20.4; a seed changes the
    # initialisation and the batches, far more than another CPU's rounding does.
    assert losses[-1]["total_loss"] < 0.95 * losses[0]["total_loss"], losses
    final = records[-1]
    assert final["bbox/AP"] > 5, final
    assert all(math.isfinite(final[f"correlation/{k}"]) for k in ("class_level_rho", "ap"))
    assert "copypaste: image_level_rho,class_level_rho" in log


def test_two_process_cpu_training_with_ddp_and_gathered_correlation(tmp_path, train_net, metrics):
    """detectron2's launcher with 2 processes (GLOO): DDP without find_unused_parameters fails
    if any parameter misses a gradient, and the correlation is computed over both processes'
    positives."""
    config = os.path.join(REPO, "configs", "CPU", "fcos_R_18_FPN_raccoon_scratch.yaml")
    out = str(tmp_path / "out")
    log = train_net(
        "--num-gpus",
        "2",
        "--config-file",
        config,
        *FAST,
        "SOLVER.MAX_ITER",
        "8",
        "SOLVER.IMS_PER_BATCH",
        "4",
        "MODEL.CORR_LOSS.GATHER_ACROSS_PROCESSES",
        "True",
        "DATASETS.TEST",
        "()",
        "OUTPUT_DIR",
        out,
        cwd=tmp_path,
    )
    assert "World size: 2" in log
    # 8 steps, 4 of them warm-up, at the raccoon recipe's rate: finite on any CPU.
    records = [r for r in metrics(out) if "total_loss" in r]
    assert records and all(math.isfinite(r["total_loss"]) for r in records)
    assert records[-1]["iteration"] == 7
