"""DINO's keys (MODEL.DINO): its own, and the set-matching keys it shares with Sparse R-CNN."""

from detectron2.config import CfgNode as CN

from .checks import is_number, require
from .set_matching import add_set_matching_keys, validate_set_prediction

DINO_GROUP_NORM_GROUPS = 32  # of DINO's input projections


def add_dino_config(cfg: CN) -> None:
    """Adds MODEL.DINO to ``cfg`` in place."""
    # DINO (Zhang et al. 2023): deformable encoder and decoder, two-stage query selection,
    # contrastive denoising, Hungarian matching, NMS-free. Defaults: the released DINO-4scale
    # (IDEA-Research/detrex projects/dino).
    cfg.MODEL.DINO = CN()
    # Object classes the decoder predicts (the training datasets' classes must match).
    cfg.MODEL.DINO.NUM_CLASSES = 80
    # Backbone features projected to the transformer's first levels (ResNet C3-C5).
    cfg.MODEL.DINO.IN_FEATURES = ["res3", "res4", "res5"]
    # Levels of the transformer: IN_FEATURES, then strided 3x3 convolutions (4-scale: one).
    cfg.MODEL.DINO.NUM_FEATURE_LEVELS = 4
    # Width of the transformer (a multiple of 32: the input projections' GroupNorm groups).
    cfg.MODEL.DINO.HIDDEN_DIM = 256
    # Attention heads (must divide HIDDEN_DIM) and sampling points per head and level of the
    # deformable attention, in the encoder and the decoder.
    cfg.MODEL.DINO.NUM_HEADS = 8
    cfg.MODEL.DINO.NUM_POINTS = 4
    # Encoder and decoder layers, the hidden width of their feedforward networks, and the
    # dropout rate of their layers.
    cfg.MODEL.DINO.NUM_ENCODER_LAYERS = 6
    cfg.MODEL.DINO.NUM_DECODER_LAYERS = 6
    cfg.MODEL.DINO.DIM_FEEDFORWARD = 2048
    cfg.MODEL.DINO.DROPOUT = 0.0
    # Matching queries: the top encoder proposals that become the decoder's reference boxes.
    cfg.MODEL.DINO.NUM_QUERIES = 900
    # Each decoder layer has its own class and box heads (detrex), or all share one pair (the
    # official DINO code).
    cfg.MODEL.DINO.SHARE_LAYER_HEADS = False
    # Sine position embedding of the feature maps: temperature, and the offset added to the
    # pixel's index before normalising (detrex 12 epochs: 10000, -0.5; 24 epochs: 20, 0.0).
    cfg.MODEL.DINO.POSITION_EMBEDDING_TEMPERATURE = 10000.0
    cfg.MODEL.DINO.POSITION_EMBEDDING_OFFSET = -0.5
    # Contrastive denoising: at most DN_NUMBER noised copies of the ground truths, as many
    # negatives; a copy's class is resampled with probability DN_LABEL_NOISE_RATIO / 2; its
    # corners move by up to DN_BOX_NOISE_SCALE half-sides (negatives: 1 to 2 times that).
    # DN_NUMBER 0: no denoising. Label noise: detrex's DINO 0.2; Align-DETR and the official
    # DINO 0.5.
    cfg.MODEL.DINO.DN_NUMBER = 100
    cfg.MODEL.DINO.DN_LABEL_NOISE_RATIO = 0.2
    cfg.MODEL.DINO.DN_BOX_NOISE_SCALE = 1.0
    # DINO's loss weights the encoder proposals, every decoder layer and the denoising queries
    # alike; L1 compares normalised (cx, cy, w, h).
    add_set_matching_keys(cfg.MODEL.DINO, class_weight=1.0)


def validate_dino_config(cfg: CN) -> None:
    """Checks the keys :func:`add_dino_config` adds."""
    dino = cfg.MODEL.DINO
    validate_set_prediction(
        dino,
        "MODEL.DINO",
        (
            "NUM_FEATURE_LEVELS",
            "NUM_POINTS",
            "NUM_ENCODER_LAYERS",
            "NUM_DECODER_LAYERS",
            "NUM_QUERIES",
        ),
    )
    require(
        "MODEL.DINO.IN_FEATURES",
        dino.IN_FEATURES,
        len(dino.IN_FEATURES) >= 1,
        "a list of at least one backbone feature (DINO 4-scale: ['res3', 'res4', 'res5'])",
    )
    require(
        "MODEL.DINO.HIDDEN_DIM",
        dino.HIDDEN_DIM,
        dino.HIDDEN_DIM % DINO_GROUP_NORM_GROUPS == 0,
        f"a multiple of {DINO_GROUP_NORM_GROUPS} (the GroupNorm groups of the input projections)",
    )
    require(
        "MODEL.DINO.POSITION_EMBEDDING_TEMPERATURE",
        dino.POSITION_EMBEDDING_TEMPERATURE,
        is_number(dino.POSITION_EMBEDDING_TEMPERATURE) and dino.POSITION_EMBEDDING_TEMPERATURE > 0,
        "a number > 0",
    )
    require(
        "MODEL.DINO.DN_NUMBER",
        dino.DN_NUMBER,
        isinstance(dino.DN_NUMBER, int) and dino.DN_NUMBER >= 0,
        "an integer >= 0 (0 = no denoising queries)",
    )
    require(
        "MODEL.DINO.DN_LABEL_NOISE_RATIO",
        dino.DN_LABEL_NOISE_RATIO,
        is_number(dino.DN_LABEL_NOISE_RATIO) and 0 <= dino.DN_LABEL_NOISE_RATIO <= 1,
        "in [0, 1]",
    )
    require(
        "MODEL.DINO.DN_BOX_NOISE_SCALE",
        dino.DN_BOX_NOISE_SCALE,
        is_number(dino.DN_BOX_NOISE_SCALE) and dino.DN_BOX_NOISE_SCALE >= 0,
        "a number >= 0",
    )
