"""YOLACT's keys (MODEL.YOLACT)."""

from detectron2.config import CfgNode as CN

from .checks import check_box_weights, check_choice, is_number, require

YOLACT_NMS_TYPES = ("fast", "standard")


def add_yolact_config(cfg: CN) -> None:
    """Adds MODEL.YOLACT to ``cfg`` in place."""
    # YOLACT (Bolya et al. 2019) as the Correlation Loss code releases it (fehmikahraman/CorrLoss
    # configs/CorrLoss/yolact_r50_4x8_coco.py): RetinaNet-style anchors (MODEL.ANCHOR_GENERATOR)
    # on P3-P7, a protonet on P3, masks = prototypes x per-detection coefficients.
    cfg.MODEL.YOLACT = CN()
    # Object classes the head predicts (the training datasets' classes must match).
    cfg.MODEL.YOLACT.NUM_CLASSES = 80
    # Backbone features of the shared head; the first also feeds the protonet and the semantic
    # segmentation branch (build_retinanet_resnet_fpn_backbone gives p3..p7).
    cfg.MODEL.YOLACT.IN_FEATURES = ["p3", "p4", "p5", "p6", "p7"]
    # Shared 3x3 convolutions before the class, box and coefficient predictors (released: 1).
    cfg.MODEL.YOLACT.NUM_HEAD_CONVS = 1
    # Prototype masks k (coefficients per anchor) and the width of the protonet's convolutions.
    cfg.MODEL.YOLACT.NUM_PROTOTYPES = 32
    cfg.MODEL.YOLACT.PROTONET_DIM = 256
    # Anchor labels from IoU: < 0.4 background, >= 0.5 foreground (and each ground truth's best
    # anchors), in between ignored.
    cfg.MODEL.YOLACT.IOU_THRESHOLDS = [0.4, 0.5]
    cfg.MODEL.YOLACT.IOU_LABELS = [0, -1, 1]
    # Box deltas (dx, dy, dw, dh) scaled by these weights (released: stds 0.1, 0.1, 0.2, 0.2).
    cfg.MODEL.YOLACT.BBOX_REG_WEIGHTS = (10.0, 10.0, 5.0, 5.0)
    # Hard negatives kept per positive by the softmax classification loss (3:1).
    cfg.MODEL.YOLACT.NEG_POS_RATIO = 3.0
    # Smooth-L1 beta and weight of the box loss; weights of the mask and semantic losses.
    cfg.MODEL.YOLACT.SMOOTH_L1_BETA = 1.0
    cfg.MODEL.YOLACT.BOX_LOSS_WEIGHT = 1.5
    cfg.MODEL.YOLACT.MASK_LOSS_WEIGHT = 6.125
    cfg.MODEL.YOLACT.SEMANTIC_LOSS_WEIGHT = 1.0
    # Positives per image whose masks are trained (a random subset beyond it).
    cfg.MODEL.YOLACT.MAX_MASKS_TO_TRAIN = 100
    # Masks are cropped to their box grown by this many prototype pixels.
    cfg.MODEL.YOLACT.MASK_CROP_PADDING = 1.0
    # Inference: candidates per level (by best foreground score) before NMS, score threshold,
    # NMS IoU threshold, NMS "fast" (YOLACT's Fast NMS) or "standard" (greedy, per class), boxes
    # per class Fast NMS considers, and the threshold of the mask probabilities.
    # TEST.DETECTIONS_PER_IMAGE caps the output (released: 1000, 0.05, 0.5, fast, 200, 0.5, 100).
    cfg.MODEL.YOLACT.TOPK_CANDIDATES_TEST = 1000
    cfg.MODEL.YOLACT.SCORE_THRESH_TEST = 0.05
    cfg.MODEL.YOLACT.NMS_THRESH_TEST = 0.5
    cfg.MODEL.YOLACT.NMS_TYPE = "fast"
    cfg.MODEL.YOLACT.NMS_TOP_K = 200
    cfg.MODEL.YOLACT.MASK_THRESHOLD = 0.5


def validate_yolact_config(cfg: CN) -> None:
    """Checks the keys :func:`add_yolact_config` adds."""
    yolact = cfg.MODEL.YOLACT
    for key in (
        "NUM_CLASSES",
        "NUM_HEAD_CONVS",
        "NUM_PROTOTYPES",
        "PROTONET_DIM",
        "MAX_MASKS_TO_TRAIN",
        "TOPK_CANDIDATES_TEST",
        "NMS_TOP_K",
    ):
        require(
            f"MODEL.YOLACT.{key}",
            yolact[key],
            isinstance(yolact[key], int) and yolact[key] >= 1,
            "an integer >= 1",
        )
    require(
        "MODEL.YOLACT.IN_FEATURES",
        yolact.IN_FEATURES,
        len(yolact.IN_FEATURES) >= 1,
        "a list of backbone features, the protonet's first (released: p3..p7)",
    )
    for key in (
        "NEG_POS_RATIO",
        "SMOOTH_L1_BETA",
        "BOX_LOSS_WEIGHT",
        "MASK_LOSS_WEIGHT",
        "SEMANTIC_LOSS_WEIGHT",
        "MASK_CROP_PADDING",
    ):
        require(
            f"MODEL.YOLACT.{key}",
            yolact[key],
            is_number(yolact[key]) and yolact[key] >= 0,
            "a number >= 0",
        )
    for key in ("SCORE_THRESH_TEST", "NMS_THRESH_TEST", "MASK_THRESHOLD"):
        require(
            f"MODEL.YOLACT.{key}",
            yolact[key],
            is_number(yolact[key]) and 0 <= yolact[key] <= 1,
            "in [0, 1]",
        )
    check_choice("MODEL.YOLACT.NMS_TYPE", yolact.NMS_TYPE, YOLACT_NMS_TYPES)
    check_box_weights("MODEL.YOLACT.BBOX_REG_WEIGHTS", yolact.BBOX_REG_WEIGHTS)
