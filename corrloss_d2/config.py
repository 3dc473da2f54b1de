"""Config keys of corrloss_d2 (yacs, Detectron2 style)."""

import math
import os
from typing import Sequence

import yaml
from detectron2.config import CfgNode as CN
from detectron2.config import get_cfg

from .errors import ConfigError, MissingFileError
from .losses import CLASSIFICATION_LOSS_KINDS, CORRELATION_KINDS

__all__ = [
    "add_corrloss_config",
    "validate_corrloss_config",
    "load_corrloss_config",
    "is_number",
    "GROUPINGS",
    "GROUP_REDUCTIONS",
]

GROUPINGS = ("batch", "level", "image")  # what CorrelationLossHook accepts
GROUP_BY_CHOICES = ("auto",) + GROUPINGS  # "auto": the meta-architecture's paper default
GROUP_REDUCTIONS = ("mean", "sum")
YOLACT_NMS_TYPES = ("fast", "standard")
OPTIMIZERS = ("SGD", "ADAMW")
CLIP_TYPES = ("value", "norm", "full_model")  # detectron2's two, and one norm over all parameters
TRAIN_AUGMENTATIONS = ("detectron2", "sparse_rcnn", "yolact")
HEAD_NORMS = ("GN", "BN", "SyncBN", "")  # of the FCOS and ATSS towers
DINO_GROUP_NORM_GROUPS = 32  # of DINO's input projections


def add_corrloss_config(cfg: CN) -> None:
    """Adds MODEL.CORR_LOSS, MODEL.CLS_LOSS, MODEL.FCOS, MODEL.ATSS, MODEL.SPARSE_RCNN,
    MODEL.DINO, MODEL.YOLACT and the optimiser and augmentation choices (SOLVER.OPTIMIZER,
    SOLVER.BACKBONE_MULTIPLIER, INPUT.TRAIN_AUGMENTATION)
    and TEST.CORRELATION_EVAL to ``cfg`` in place (call before ``merge_from_file``). Idempotent."""
    if cfg.MODEL.get("CORR_LOSS") is not None:
        return
    cfg.MODEL.CORR_LOSS = CN()
    # Weight λ of the auxiliary term λ·(1 − ρ(score, IoU)). 0 disables the term; ρ is still
    # measured and logged as corr/rho so that baselines can be compared.
    cfg.MODEL.CORR_LOSS.WEIGHT = 0.0
    # Correlation coefficient: "pearson", "concordance" (Lin's CCC) or "spearman" (soft ranks).
    cfg.MODEL.CORR_LOSS.TYPE = "spearman"
    # Soft-rank regularisation strength for "spearman". 1.0 is the paper's code (on scores and
    # IoUs in [0, 1] it makes "spearman" equal "pearson"); values well below 2 / #positives give a
    # true rank correlation.
    cfg.MODEL.CORR_LOSS.RANK_STRENGTH = 1.0
    # Samples one ρ is computed over: "batch" (all positives of the process), "level" (per FPN
    # level, averaged), "image" (per image, averaged) or "auto" (the paper's choice for the
    # meta-architecture: RetinaNet "level", FCOS and ATSS "batch").
    cfg.MODEL.CORR_LOSS.GROUP_BY = "auto"
    # How the groups' terms combine: "mean" (1 − mean ρ), "sum" (Σ (1 − ρ), YOLACT's released
    # per-image sum) or "auto" (the meta-architecture's: "sum" for YOLACT, "mean" otherwise).
    cfg.MODEL.CORR_LOSS.GROUP_REDUCTION = "auto"
    # Groups with fewer positives than this are skipped (≥ 2: a correlation needs two samples).
    cfg.MODEL.CORR_LOSS.MIN_POSITIVES = 2
    # Pool the positives of all processes before computing ρ (off in the paper: one ρ per GPU).
    cfg.MODEL.CORR_LOSS.GATHER_ACROSS_PROCESSES = False
    # Images one ρ spans, whatever the number of processes (the released recipes: 4, one GPU's
    # batch on 4 GPUs x 4 images). 0: each process's own batch. More than a process's images
    # (SOLVER.IMS_PER_BATCH / processes): consecutive processes pool their positives; fewer: the
    # process splits its batch into groups of consecutive images. GROUP_BY batch or level only.
    cfg.MODEL.CORR_LOSS.IMAGES_PER_RHO = 0

    cfg.MODEL.CLS_LOSS = CN()
    # Classification loss: "focal" (the detector's own; alpha/gamma from MODEL.RETINANET or
    # MODEL.FCOS), "ia_bce" (Align-DETR), "qfl" (GFL) or "vfl" (VarifocalNet). Dense detectors
    # normalise each by their positive-anchor count.
    cfg.MODEL.CLS_LOSS.TYPE = "focal"
    # IA-BCE quality target t = s^ALPHA · IoU^(1 − ALPHA).
    cfg.MODEL.CLS_LOSS.IA_BCE_ALPHA = 0.25
    # IA-BCE negatives are weighted by p^GAMMA.
    cfg.MODEL.CLS_LOSS.IA_BCE_GAMMA = 2.0
    # QFL modulating exponent |IoU − p|^BETA.
    cfg.MODEL.CLS_LOSS.QFL_BETA = 2.0
    # VFL negatives are weighted by ALPHA · p^GAMMA.
    cfg.MODEL.CLS_LOSS.VFL_ALPHA = 0.75
    cfg.MODEL.CLS_LOSS.VFL_GAMMA = 2.0

    # FCOS (Tian et al. 2019) as detectron2 implements it, made yaml-configurable.
    cfg.MODEL.FCOS = _dense_head_node()
    # Points within RADIUS · stride of a box centre (and inside the box) are positives.
    cfg.MODEL.FCOS.CENTER_SAMPLING_RADIUS = 1.5
    # Inference: score threshold, candidates per level before NMS, NMS IoU threshold.
    cfg.MODEL.FCOS.SCORE_THRESH_TEST = 0.2
    cfg.MODEL.FCOS.TOPK_CANDIDATES_TEST = 1000
    cfg.MODEL.FCOS.NMS_THRESH_TEST = 0.6

    # ATSS (Zhang et al. 2020) as released (mmdetection's atss_r50_fpn_1x_coco.py): one square
    # anchor per location assigned by adaptive training sample selection, FCOS-style head.
    cfg.MODEL.ATSS = _dense_head_node()
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

    # Sparse R-CNN (Sun et al. 2021): learnable proposals refined by NUM_STAGES dynamic heads,
    # Hungarian matching, NMS-free. RoIAlign uses MODEL.ROI_BOX_HEAD.POOLER_{RESOLUTION,
    # SAMPLING_RATIO,TYPE}.
    cfg.MODEL.SPARSE_RCNN = CN()
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
    cfg.MODEL.SPARSE_RCNN.DIM_FEEDFORWARD = 2048
    cfg.MODEL.SPARSE_RCNN.DROPOUT = 0.0
    # Linear+LayerNorm+ReLU layers before the class logits and before the box deltas.
    cfg.MODEL.SPARSE_RCNN.NUM_CLS_LAYERS = 1
    cfg.MODEL.SPARSE_RCNN.NUM_REG_LAYERS = 3
    _add_set_matching_keys(cfg.MODEL.SPARSE_RCNN, class_weight=2.0)

    # DINO (Zhang et al. 2023): deformable encoder and decoder, two-stage query selection,
    # contrastive denoising, Hungarian matching, NMS-free. Defaults: the released DINO-4scale
    # (IDEA-Research/detrex projects/dino).
    cfg.MODEL.DINO = CN()
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
    _add_set_matching_keys(cfg.MODEL.DINO, class_weight=1.0)

    # YOLACT (Bolya et al. 2019) as the Correlation Loss code releases it (fehmikahraman/CorrLoss
    # configs/CorrLoss/yolact_r50_4x8_coco.py): RetinaNet-style anchors (MODEL.ANCHOR_GENERATOR)
    # on P3-P7, a protonet on P3, masks = prototypes x per-detection coefficients.
    cfg.MODEL.YOLACT = CN()
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

    # Optimiser built by train_net.py: "SGD" (detectron2's, the dense recipes) or "ADAMW" (Sparse
    # R-CNN: weight decay SOLVER.WEIGHT_DECAY). Gradient clipping follows SOLVER.CLIP_GRADIENTS,
    # whose CLIP_TYPE may also be "full_model": one norm over all parameters (Sparse R-CNN).
    cfg.SOLVER.OPTIMIZER = "SGD"
    # Learning-rate multiplier of the backbone's parameters.
    cfg.SOLVER.BACKBONE_MULTIPLIER = 1.0
    # Train-time augmentation: "detectron2" (DatasetMapper: optional INPUT.CROP, multi-scale resize,
    # flip) or "sparse_rcnn" (flip; with probability 0.5 a resize to 400-600 and an INPUT.CROP
    # crop first; then the multi-scale resize of INPUT.MIN_SIZE_TRAIN) or "yolact" (photometric
    # distortion, zoom-out by 1-4x, a crop keeping a minimum IoU with the boxes, a
    # MIN_SIZE_TRAIN[0] square resize ignoring the aspect ratio, flip; the test images are
    # resized to a MIN_SIZE_TEST square).
    cfg.INPUT.TRAIN_AUGMENTATION = "detectron2"
    # Training drops ground truths whose box is at most this many pixels of the original image
    # wide or tall, and the images left without one (YOLACT's released recipe: 4.0; 0 keeps all).
    cfg.INPUT.MIN_BOX_SIDE_TRAIN = 0.0

    # Score-localisation correlation measures (corrloss_d2.evaluation.CorrelationEvaluator),
    # reported next to box AP under the task "correlation".
    cfg.TEST.CORRELATION_EVAL = CN()
    # False: box AP only.
    cfg.TEST.CORRELATION_EVAL.ENABLED = True
    # IoU with a ground truth of its class that makes a detection positive / a true positive.
    cfg.TEST.CORRELATION_EVAL.IOU_THRESHOLD = 0.5
    # The N of br_recall@N: how often the best-regressed candidate scores among its image's top N.
    cfg.TEST.CORRELATION_EVAL.BR_RECALL_TOP_N = [10, 100]


def _dense_head_node() -> CN:
    """The keys FCOS and ATSS heads share (the recipes' values)."""
    node = CN()
    node.NUM_CLASSES = 80
    # Backbone features the head runs on (build_fcos_resnet_fpn_backbone gives p3..p7).
    node.IN_FEATURES = ["p3", "p4", "p5", "p6", "p7"]
    # Convolutions in each of the classification and box towers.
    node.NUM_CONVS = 4
    # Normalisation in the towers: "GN" (the recipes'), "BN", "SyncBN" or "" for none.
    node.HEAD_NORM = "GN"
    # Initial foreground probability of the classification bias.
    node.PRIOR_PROB = 0.01
    node.FOCAL_LOSS_ALPHA = 0.25
    node.FOCAL_LOSS_GAMMA = 2.0
    return node


def _add_set_matching_keys(node: CN, *, class_weight: float) -> None:
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
    node.FOCAL_LOSS_ALPHA = 0.25
    node.FOCAL_LOSS_GAMMA = 2.0
    # Align-DETR's mixed matching: every stage but the last (DINO: the encoder proposals too)
    # matches each ground truth to k queries (capped at floor(0.5 * queries / #gt), at least 1),
    # the last one-to-one. 0 = one-to-one everywhere (Sparse R-CNN, DINO; Align-DETR: 2).
    node.ONE_TO_MANY_K = 0
    # Align-DETR's prime-sample weights exp(-rank / TAU) within each ground truth's group of
    # queries; they scale the IA-BCE target and the L1/GIoU terms. 0 = off.
    node.PRIME_SAMPLE_TAU = 1.5


def _require(key: str, value, ok: bool, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"cfg.{key} = {value!r} is not valid; allowed values: {allowed}")


def _check_choice(key: str, value, choices) -> None:
    _require(key, value, value in choices, ", ".join(map(repr, choices)))


def validate_corrloss_config(cfg: CN) -> None:
    """Raises :class:`~corrloss_d2.errors.ConfigError` (a ValueError) naming the key, the value
    and the allowed values."""
    if cfg.MODEL.get("CORR_LOSS") is None:
        raise KeyError(
            f"cfg.MODEL.META_ARCHITECTURE = {cfg.MODEL.META_ARCHITECTURE!r} needs the "
            "corrloss_d2 config keys: call corrloss_d2.add_corrloss_config(cfg) before "
            "cfg.merge_from_file(...)"
        )
    corr, cls, fcos = cfg.MODEL.CORR_LOSS, cfg.MODEL.CLS_LOSS, cfg.MODEL.FCOS
    _check_choice("MODEL.CORR_LOSS.TYPE", corr.TYPE, CORRELATION_KINDS)
    _check_choice("MODEL.CORR_LOSS.GROUP_BY", corr.GROUP_BY, GROUP_BY_CHOICES)
    _check_choice(
        "MODEL.CORR_LOSS.GROUP_REDUCTION", corr.GROUP_REDUCTION, ("auto",) + GROUP_REDUCTIONS
    )
    _check_choice("MODEL.CLS_LOSS.TYPE", cls.TYPE, CLASSIFICATION_LOSS_KINDS)
    _require(
        "MODEL.CORR_LOSS.WEIGHT",
        corr.WEIGHT,
        is_number(corr.WEIGHT) and corr.WEIGHT >= 0,
        "a number >= 0",
    )
    _require(
        "MODEL.CORR_LOSS.RANK_STRENGTH",
        corr.RANK_STRENGTH,
        is_number(corr.RANK_STRENGTH) and corr.RANK_STRENGTH > 0,
        "a number > 0",
    )
    _require(
        "MODEL.CORR_LOSS.IMAGES_PER_RHO",
        corr.IMAGES_PER_RHO,
        isinstance(corr.IMAGES_PER_RHO, int) and corr.IMAGES_PER_RHO >= 0,
        "an integer >= 0 (0: each process's own batch)",
    )
    _require(
        "MODEL.CORR_LOSS.IMAGES_PER_RHO",
        corr.IMAGES_PER_RHO,
        corr.IMAGES_PER_RHO == 0 or not corr.GATHER_ACROSS_PROCESSES,
        "0 when MODEL.CORR_LOSS.GATHER_ACROSS_PROCESSES is True (that pools every process)",
    )
    _require(
        "MODEL.CORR_LOSS.IMAGES_PER_RHO",
        corr.IMAGES_PER_RHO,
        corr.IMAGES_PER_RHO == 0 or corr.GROUP_BY != "image",
        "0 when MODEL.CORR_LOSS.GROUP_BY is 'image' (one ρ per image)",
    )
    _require(
        "MODEL.CORR_LOSS.MIN_POSITIVES",
        corr.MIN_POSITIVES,
        isinstance(corr.MIN_POSITIVES, int) and corr.MIN_POSITIVES >= 2,
        "an integer >= 2",
    )
    _require(
        "MODEL.CLS_LOSS.IA_BCE_ALPHA",
        cls.IA_BCE_ALPHA,
        is_number(cls.IA_BCE_ALPHA) and 0 <= cls.IA_BCE_ALPHA <= 1,
        "in [0, 1]",
    )
    _require(
        "MODEL.FCOS.CENTER_SAMPLING_RADIUS",
        fcos.CENTER_SAMPLING_RADIUS,
        is_number(fcos.CENTER_SAMPLING_RADIUS) and fcos.CENTER_SAMPLING_RADIUS > 0,
        "a number > 0",
    )
    _check_choice("MODEL.FCOS.HEAD_NORM", fcos.HEAD_NORM, HEAD_NORMS)
    _validate_atss(cfg.MODEL.ATSS)
    _validate_set_prediction(
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
    _validate_set_prediction(
        cfg.MODEL.DINO,
        "MODEL.DINO",
        (
            "NUM_FEATURE_LEVELS",
            "NUM_POINTS",
            "NUM_ENCODER_LAYERS",
            "NUM_DECODER_LAYERS",
            "NUM_QUERIES",
        ),
    )
    _validate_dino(cfg.MODEL.DINO)
    _validate_yolact(cfg.MODEL.YOLACT)
    _check_choice("SOLVER.OPTIMIZER", cfg.SOLVER.OPTIMIZER, OPTIMIZERS)
    _require(
        "SOLVER.BACKBONE_MULTIPLIER",
        cfg.SOLVER.BACKBONE_MULTIPLIER,
        is_number(cfg.SOLVER.BACKBONE_MULTIPLIER) and cfg.SOLVER.BACKBONE_MULTIPLIER >= 0,
        "a number >= 0",
    )
    _check_choice(
        "SOLVER.CLIP_GRADIENTS.CLIP_TYPE", cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE, CLIP_TYPES
    )
    _check_choice("INPUT.TRAIN_AUGMENTATION", cfg.INPUT.TRAIN_AUGMENTATION, TRAIN_AUGMENTATIONS)
    _require(
        "INPUT.MIN_BOX_SIDE_TRAIN",
        cfg.INPUT.MIN_BOX_SIDE_TRAIN,
        is_number(cfg.INPUT.MIN_BOX_SIDE_TRAIN) and cfg.INPUT.MIN_BOX_SIDE_TRAIN >= 0,
        "a number >= 0 (pixels; 0 keeps every box)",
    )
    correlation_eval = cfg.TEST.CORRELATION_EVAL
    _require(
        "TEST.CORRELATION_EVAL.IOU_THRESHOLD",
        correlation_eval.IOU_THRESHOLD,
        is_number(correlation_eval.IOU_THRESHOLD) and 0 < correlation_eval.IOU_THRESHOLD <= 1,
        "in (0, 1]",
    )
    _require(
        "TEST.CORRELATION_EVAL.BR_RECALL_TOP_N",
        correlation_eval.BR_RECALL_TOP_N,
        all(isinstance(n, int) and n >= 1 for n in correlation_eval.BR_RECALL_TOP_N),
        "a list of integers >= 1",
    )


def is_number(value) -> bool:
    """A finite int or float (not a bool, a string, NaN or infinity)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_box_weights(key: str, weights) -> None:
    _require(
        key,
        weights,
        len(weights) == 4 and all(is_number(w) and w > 0 for w in weights),
        "four numbers > 0",
    )


def _validate_atss(atss) -> None:
    for key in ("NUM_CLASSES", "NUM_CONVS", "TOPK"):
        _require(
            f"MODEL.ATSS.{key}",
            atss[key],
            isinstance(atss[key], int) and atss[key] >= 1,
            "an integer >= 1",
        )
    _check_choice("MODEL.ATSS.HEAD_NORM", atss.HEAD_NORM, HEAD_NORMS)
    _require(
        "MODEL.ATSS.ANCHOR_SCALE",
        atss.ANCHOR_SCALE,
        is_number(atss.ANCHOR_SCALE) and atss.ANCHOR_SCALE > 0,
        "a number > 0",
    )
    for key in ("BOX_LOSS_WEIGHT", "CENTERNESS_LOSS_WEIGHT"):
        _require(f"MODEL.ATSS.{key}", atss[key], is_number(atss[key]) and atss[key] >= 0, ">= 0")
    _check_box_weights("MODEL.ATSS.BBOX_REG_WEIGHTS", atss.BBOX_REG_WEIGHTS)


def _validate_set_prediction(node, prefix: str, architecture_counts: Sequence[str]) -> None:
    """The keys MODEL.SPARSE_RCNN and MODEL.DINO share, and their own counts (integers >= 1)."""
    for key in ("NUM_CLASSES", "HIDDEN_DIM", "NUM_HEADS", "DIM_FEEDFORWARD", *architecture_counts):
        _require(
            f"{prefix}.{key}",
            node[key],
            isinstance(node[key], int) and node[key] >= 1,
            "an integer >= 1",
        )
    _require(
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
        _require(
            f"{prefix}.{key}", node[key], is_number(node[key]) and node[key] >= 0, "a number >= 0"
        )
    _require(
        f"{prefix}.ONE_TO_MANY_K",
        node.ONE_TO_MANY_K,
        isinstance(node.ONE_TO_MANY_K, int) and node.ONE_TO_MANY_K >= 0,
        "an integer >= 0 (0 = one-to-one matching everywhere)",
    )
    _require(
        f"{prefix}.DROPOUT",
        node.DROPOUT,
        is_number(node.DROPOUT) and 0 <= node.DROPOUT < 1,
        "in [0, 1)",
    )
    _require(
        f"{prefix}.PRIOR_PROB",
        node.PRIOR_PROB,
        is_number(node.PRIOR_PROB) and 0 < node.PRIOR_PROB < 1,
        "in (0, 1)",
    )


def _validate_dino(dino) -> None:
    _require(
        "MODEL.DINO.IN_FEATURES",
        dino.IN_FEATURES,
        len(dino.IN_FEATURES) >= 1,
        "a list of at least one backbone feature (DINO 4-scale: ['res3', 'res4', 'res5'])",
    )
    _require(
        "MODEL.DINO.HIDDEN_DIM",
        dino.HIDDEN_DIM,
        dino.HIDDEN_DIM % DINO_GROUP_NORM_GROUPS == 0,
        f"a multiple of {DINO_GROUP_NORM_GROUPS} (the GroupNorm groups of the input projections)",
    )
    _require(
        "MODEL.DINO.POSITION_EMBEDDING_TEMPERATURE",
        dino.POSITION_EMBEDDING_TEMPERATURE,
        is_number(dino.POSITION_EMBEDDING_TEMPERATURE) and dino.POSITION_EMBEDDING_TEMPERATURE > 0,
        "a number > 0",
    )
    _require(
        "MODEL.DINO.DN_NUMBER",
        dino.DN_NUMBER,
        isinstance(dino.DN_NUMBER, int) and dino.DN_NUMBER >= 0,
        "an integer >= 0 (0 = no denoising queries)",
    )
    _require(
        "MODEL.DINO.DN_LABEL_NOISE_RATIO",
        dino.DN_LABEL_NOISE_RATIO,
        is_number(dino.DN_LABEL_NOISE_RATIO) and 0 <= dino.DN_LABEL_NOISE_RATIO <= 1,
        "in [0, 1]",
    )
    _require(
        "MODEL.DINO.DN_BOX_NOISE_SCALE",
        dino.DN_BOX_NOISE_SCALE,
        is_number(dino.DN_BOX_NOISE_SCALE) and dino.DN_BOX_NOISE_SCALE >= 0,
        "a number >= 0",
    )


def _validate_yolact(yolact) -> None:
    for key in (
        "NUM_CLASSES",
        "NUM_HEAD_CONVS",
        "NUM_PROTOTYPES",
        "PROTONET_DIM",
        "MAX_MASKS_TO_TRAIN",
        "TOPK_CANDIDATES_TEST",
        "NMS_TOP_K",
    ):
        _require(
            f"MODEL.YOLACT.{key}",
            yolact[key],
            isinstance(yolact[key], int) and yolact[key] >= 1,
            "an integer >= 1",
        )
    _require(
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
        _require(
            f"MODEL.YOLACT.{key}",
            yolact[key],
            is_number(yolact[key]) and yolact[key] >= 0,
            "a number >= 0",
        )
    for key in ("SCORE_THRESH_TEST", "NMS_THRESH_TEST", "MASK_THRESHOLD"):
        _require(
            f"MODEL.YOLACT.{key}",
            yolact[key],
            is_number(yolact[key]) and 0 <= yolact[key] <= 1,
            "in [0, 1]",
        )
    _check_choice("MODEL.YOLACT.NMS_TYPE", yolact.NMS_TYPE, YOLACT_NMS_TYPES)
    _check_box_weights("MODEL.YOLACT.BBOX_REG_WEIGHTS", yolact.BBOX_REG_WEIGHTS)


# Why a value yacs rejects may be wrong (yacs raises ValueError only for a type mismatch).
_MERGE_HINTS = {
    ValueError: " Give the key a value of its default's type: a float key needs a "
    "number with a decimal point (1.0, not 1 or '1.0'), a list key a list."
}


def load_corrloss_config(config_file: str, opts: Sequence = ()) -> CN:
    """What ``train_net.py`` runs: ``get_cfg()``, :func:`add_corrloss_config`,
    ``merge_from_file(config_file)``, ``merge_from_list(opts)`` and
    :func:`validate_corrloss_config`. A missing file raises :class:`MissingFileError`; an unknown
    key, a value of the wrong type or an invalid value raises :class:`ConfigError` naming the file
    or override it came from."""
    if not config_file or not os.path.isfile(config_file):
        given = f"config file {config_file!r} does not exist" if config_file else "no config file"
        raise MissingFileError(
            f"{given} (relative paths start at {os.getcwd()}); give the path of "
            "a yaml config, e.g. "
            "configs/CPU/retinanet_R_18_FPN_raccoon_scratch.yaml"
        )
    cfg = get_cfg()
    add_corrloss_config(cfg)  # before merging: the yaml files use MODEL.CORR_LOSS/CLS_LOSS/FCOS
    for source, merge, arg in (
        (f"config file {config_file}", cfg.merge_from_file, config_file),
        ("command-line overrides", cfg.merge_from_list, list(opts)),
    ):
        try:
            merge(arg)
        except (KeyError, ValueError, AssertionError, OSError, yaml.YAMLError) as error:
            text = error.args[0] if len(error.args) == 1 else str(error)  # KeyError would quote it
            raise ConfigError(f"{source}: {text}.{_MERGE_HINTS.get(type(error), '')}") from error
    validate_corrloss_config(cfg)
    return cfg
