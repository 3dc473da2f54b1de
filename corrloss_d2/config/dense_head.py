"""The keys the FCOS-style dense heads share (MODEL.FCOS, MODEL.ATSS)."""

from detectron2.config import CfgNode as CN

HEAD_NORMS = ("GN", "BN", "SyncBN", "")  # of the FCOS and ATSS towers


def dense_head_node() -> CN:
    """The keys FCOS and ATSS heads share (the recipes' values)."""
    node = CN()
    # Object classes the head predicts (the training datasets' classes must match).
    node.NUM_CLASSES = 80
    # Backbone features the head runs on (build_fcos_resnet_fpn_backbone gives p3..p7).
    node.IN_FEATURES = ["p3", "p4", "p5", "p6", "p7"]
    # Convolutions in each of the classification and box towers.
    node.NUM_CONVS = 4
    # Normalisation in the towers: "GN" (the recipes'), "BN", "SyncBN" or "" for none.
    node.HEAD_NORM = "GN"
    # Initial foreground probability of the classification bias.
    node.PRIOR_PROB = 0.01
    # Alpha and gamma of the focal classification loss (MODEL.CLS_LOSS.TYPE "focal").
    node.FOCAL_LOSS_ALPHA = 0.25
    node.FOCAL_LOSS_GAMMA = 2.0
    return node
