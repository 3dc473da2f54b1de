"""ATSS's keys (MODEL.ATSS): the dense head's, and its own."""

from detectron2.config import CfgNode as CN

from .checks import check_box_weights, check_choice, is_number, require
from .dense_head import HEAD_NORMS, dense_head_node


def add_atss_config(cfg: CN) -> None:
    """Adds MODEL.ATSS to ``cfg`` in place."""
    # ATSS (Zhang et al. 2020) as released (mmdetection's atss_r50_fpn_1x_coco.py): one square
    # anchor per location assigned by adaptive training sample selection, FCOS-style head.
    cfg.MODEL.ATSS = dense_head_node()
    # Anchor side in strides (released: octave_base_scale 8, one scale, aspect ratio 1). The
    # anchor centres follow MODEL.ANCHOR_GENERATOR.OFFSET (0.0, as released).
    cfg.MODEL.ATSS.ANCHOR_SCALE = 8.0
    # Candidates per level and ground truth whose IoUs set its threshold (mean + std).
    cfg.MODEL.ATSS.TOPK = 9
    # Box deltas (dx, dy, dw, dh) scaled by these weights (released: stds 0.1, 0.1, 0.2, 0.2).
    cfg.MODEL.ATSS.BBOX_REG_WEIGHTS = (10.0, 10.0, 5.0, 5.0)
    # Weight of the GIoU loss on the decoded boxes (weighted by their centerness targets).
    cfg.MODEL.ATSS.BOX_LOSS_WEIGHT = 2.0
    # Weight of the centerness BCE; 0.0 leaves the branch untrained, as the released
    # "no auxiliary head" experiment does.
    cfg.MODEL.ATSS.CENTERNESS_LOSS_WEIGHT = 1.0
    # Inference: score threshold (on class probability x centerness), candidates per level
    # before NMS, NMS IoU threshold (released: 0.05, 1000, 0.6).
    cfg.MODEL.ATSS.SCORE_THRESH_TEST = 0.05
    cfg.MODEL.ATSS.TOPK_CANDIDATES_TEST = 1000
    cfg.MODEL.ATSS.NMS_THRESH_TEST = 0.6


def validate_atss_config(cfg: CN) -> None:
    """Checks the keys :func:`add_atss_config` adds."""
    atss = cfg.MODEL.ATSS
    for key in ("NUM_CLASSES", "NUM_CONVS", "TOPK"):
        require(
            f"MODEL.ATSS.{key}",
            atss[key],
            isinstance(atss[key], int) and atss[key] >= 1,
            "an integer >= 1",
        )
    check_choice("MODEL.ATSS.HEAD_NORM", atss.HEAD_NORM, HEAD_NORMS)
    require(
        "MODEL.ATSS.ANCHOR_SCALE",
        atss.ANCHOR_SCALE,
        is_number(atss.ANCHOR_SCALE) and atss.ANCHOR_SCALE > 0,
        "a number > 0",
    )
    for key in ("BOX_LOSS_WEIGHT", "CENTERNESS_LOSS_WEIGHT"):
        require(f"MODEL.ATSS.{key}", atss[key], is_number(atss[key]) and atss[key] >= 0, ">= 0")
    check_box_weights("MODEL.ATSS.BBOX_REG_WEIGHTS", atss.BBOX_REG_WEIGHTS)
