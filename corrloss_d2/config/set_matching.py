"""The matching and loss keys the query-based detectors share (MODEL.SPARSE_RCNN, MODEL.DINO), and
their checks."""

from typing import Sequence

from detectron2.config import CfgNode as CN

from .checks import is_number, require


def add_set_matching_keys(node: CN, *, class_weight: float) -> None:
    """The matching and loss keys of the query-based detectors (MODEL.SPARSE_RCNN, MODEL.DINO),
    which :func:`corrloss_d2.modeling.set_criterion.set_criterion_from_config` reads."""
    # Initial foreground probability of the classification biases.
    node.PRIOR_PROB = 0.01
    # Loss weights of the classification, L1 (image-normalised boxes) and GIoU terms of every
    # stage / decoder layer (Sparse R-CNN: 2, 5, 2; DINO: 1, 5, 2).
    node.CLASS_WEIGHT = class_weight
    node.L1_WEIGHT = 5.0
    node.GIOU_WEIGHT = 2.0
    # Weights of the focal class, L1 and GIoU terms of the Hungarian matching cost (Sparse R-CNN
    # uses the loss weights; DINO and Align-DETR match with class weight 2 but weigh its loss 1).
    node.COST_CLASS_WEIGHT = 2.0
    node.COST_L1_WEIGHT = 5.0
    node.COST_GIOU_WEIGHT = 2.0
    # Alpha and gamma of the matching cost's focal class term and of the focal classification
    # loss (MODEL.CLS_LOSS.TYPE "focal").
    node.FOCAL_LOSS_ALPHA = 0.25
    node.FOCAL_LOSS_GAMMA = 2.0
    # Align-DETR's mixed matching: every stage but the last (DINO: the encoder proposals too)
    # matches each ground truth to k queries (capped at floor(0.5 * queries / #gt), at least 1),
    # the last one-to-one. 0 = one-to-one everywhere (Sparse R-CNN, DINO; Align-DETR: 2).
    node.ONE_TO_MANY_K = 0
    # Align-DETR's prime-sample weights exp(-rank / TAU) within each ground truth's group of
    # queries; they scale the IA-BCE target and the L1/GIoU terms. 0 = off.
    node.PRIME_SAMPLE_TAU = 1.5


def validate_set_prediction(node, prefix: str, architecture_counts: Sequence[str]) -> None:
    """The keys MODEL.SPARSE_RCNN and MODEL.DINO share, and their own counts (integers >= 1)."""
    for key in ("NUM_CLASSES", "HIDDEN_DIM", "NUM_HEADS", "DIM_FEEDFORWARD", *architecture_counts):
        require(
            f"{prefix}.{key}",
            node[key],
            isinstance(node[key], int) and node[key] >= 1,
            "an integer >= 1",
        )
    require(
        f"{prefix}.NUM_HEADS",
        node.NUM_HEADS,
        node.HIDDEN_DIM % node.NUM_HEADS == 0,
        f"a divisor of {prefix}.HIDDEN_DIM = {node.HIDDEN_DIM}",
    )
    for key in (
        "CLASS_WEIGHT",
        "L1_WEIGHT",
        "GIOU_WEIGHT",
        "COST_CLASS_WEIGHT",
        "COST_L1_WEIGHT",
        "COST_GIOU_WEIGHT",
        "PRIME_SAMPLE_TAU",
    ):
        require(
            f"{prefix}.{key}", node[key], is_number(node[key]) and node[key] >= 0, "a number >= 0"
        )
    require(
        f"{prefix}.ONE_TO_MANY_K",
        node.ONE_TO_MANY_K,
        isinstance(node.ONE_TO_MANY_K, int) and node.ONE_TO_MANY_K >= 0,
        "an integer >= 0 (0 = one-to-one matching everywhere)",
    )
    require(
        f"{prefix}.DROPOUT",
        node.DROPOUT,
        is_number(node.DROPOUT) and 0 <= node.DROPOUT < 1,
        "in [0, 1)",
    )
    require(
        f"{prefix}.PRIOR_PROB",
        node.PRIOR_PROB,
        is_number(node.PRIOR_PROB) and 0 < node.PRIOR_PROB < 1,
        "in (0, 1)",
    )
