"""Sparse R-CNN's keys (MODEL.SPARSE_RCNN): its own, and the set-matching keys it shares with
DINO."""

from detectron2.config import CfgNode as CN

from .set_matching import add_set_matching_keys, validate_set_prediction


def add_sparse_rcnn_config(cfg: CN) -> None:
    """Adds MODEL.SPARSE_RCNN to ``cfg`` in place."""
    # Sparse R-CNN (Sun et al. 2021): learnable proposals refined by NUM_STAGES dynamic heads,
    # Hungarian matching, NMS-free. RoIAlign uses MODEL.ROI_BOX_HEAD.POOLER_{RESOLUTION,
    # SAMPLING_RATIO,TYPE}.
    cfg.MODEL.SPARSE_RCNN = CN()
    # Object classes the heads predict (the training datasets' classes must match).
    cfg.MODEL.SPARSE_RCNN.NUM_CLASSES = 80
    # Backbone features RoIAlign reads (FPN levels P2-P5).
    cfg.MODEL.SPARSE_RCNN.IN_FEATURES = ["p2", "p3", "p4", "p5"]
    # Learnable proposal boxes and features (100; 300 in the 3x recipe).
    cfg.MODEL.SPARSE_RCNN.NUM_PROPOSALS = 100
    # Iterative refinement stages, each with its own head and its own (deep-supervised) losses.
    cfg.MODEL.SPARSE_RCNN.NUM_STAGES = 6
    # Width of proposal features and of every head layer.
    cfg.MODEL.SPARSE_RCNN.HIDDEN_DIM = 256
    # Width of the dynamic instance interaction and its number of dynamic 1x1 layers.
    cfg.MODEL.SPARSE_RCNN.DIM_DYNAMIC = 64
    cfg.MODEL.SPARSE_RCNN.NUM_DYNAMIC = 2
    # Heads of the self-attention over proposals (must divide HIDDEN_DIM).
    cfg.MODEL.SPARSE_RCNN.NUM_HEADS = 8
    # Hidden width of each head's feedforward network, and the dropout rate of the head's layers.
    cfg.MODEL.SPARSE_RCNN.DIM_FEEDFORWARD = 2048
    cfg.MODEL.SPARSE_RCNN.DROPOUT = 0.0
    # Linear+LayerNorm+ReLU layers before the class logits and before the box deltas.
    cfg.MODEL.SPARSE_RCNN.NUM_CLS_LAYERS = 1
    cfg.MODEL.SPARSE_RCNN.NUM_REG_LAYERS = 3
    add_set_matching_keys(cfg.MODEL.SPARSE_RCNN, class_weight=2.0)


def validate_sparse_rcnn_config(cfg: CN) -> None:
    """Checks the keys :func:`add_sparse_rcnn_config` adds."""
    validate_set_prediction(
        cfg.MODEL.SPARSE_RCNN,
        "MODEL.SPARSE_RCNN",
        (
            "NUM_PROPOSALS",
            "NUM_STAGES",
            "DIM_DYNAMIC",
            "NUM_DYNAMIC",
            "NUM_CLS_LAYERS",
            "NUM_REG_LAYERS",
        ),
    )
