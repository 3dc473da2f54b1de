"""FCOS's keys (MODEL.FCOS): the dense head's, and its own."""

from detectron2.config import CfgNode as CN

from .checks import check_choice, is_number, require
from .dense_head import HEAD_NORMS, dense_head_node


def add_fcos_config(cfg: CN) -> None:
    """Adds MODEL.FCOS to ``cfg`` in place."""
    # FCOS (Tian et al. 2019) as detectron2 implements it, made yaml-configurable.
    cfg.MODEL.FCOS = dense_head_node()
    # Points within RADIUS · stride of a box centre (and inside the box) are positives.
    cfg.MODEL.FCOS.CENTER_SAMPLING_RADIUS = 1.5
    # Inference: score threshold, candidates per level before NMS, NMS IoU threshold.
    cfg.MODEL.FCOS.SCORE_THRESH_TEST = 0.2
    cfg.MODEL.FCOS.TOPK_CANDIDATES_TEST = 1000
    cfg.MODEL.FCOS.NMS_THRESH_TEST = 0.6


def validate_fcos_config(cfg: CN) -> None:
    """Checks the keys :func:`add_fcos_config` adds."""
    fcos = cfg.MODEL.FCOS
    require(
        "MODEL.FCOS.CENTER_SAMPLING_RADIUS",
        fcos.CENTER_SAMPLING_RADIUS,
        is_number(fcos.CENTER_SAMPLING_RADIUS) and fcos.CENTER_SAMPLING_RADIUS > 0,
        "a number > 0",
    )
    check_choice("MODEL.FCOS.HEAD_NORM", fcos.HEAD_NORM, HEAD_NORMS)
