"""The keys every family shares: the correlation term (MODEL.CORR_LOSS), the classification loss
(MODEL.CLS_LOSS), the optimiser (SOLVER.OPTIMIZER, SOLVER.BACKBONE_MULTIPLIER), the train-time
augmentation (INPUT.TRAIN_AUGMENTATION, INPUT.MIN_BOX_SIDE_TRAIN) and the correlation evaluation
(TEST.CORRELATION_EVAL)."""

from detectron2.config import CfgNode as CN

from ..losses import CLASSIFICATION_LOSS_KINDS, CORRELATION_KINDS
from .checks import check_choice, is_number, require

# What corrloss_d2.modeling.correlation_term.CorrelationLoss accepts.
GROUPINGS = ("batch", "level", "image")
GROUP_BY_CHOICES = ("auto",) + GROUPINGS  # "auto": the meta-architecture's paper default
GROUP_REDUCTIONS = ("mean", "sum")
OPTIMIZERS = ("SGD", "ADAMW")
CLIP_TYPES = ("value", "norm", "full_model")  # detectron2's two, and one norm over all parameters
TRAIN_AUGMENTATIONS = ("detectron2", "sparse_rcnn", "yolact")


def add_common_config(cfg: CN) -> None:
    """Adds MODEL.CORR_LOSS, MODEL.CLS_LOSS, SOLVER.OPTIMIZER, SOLVER.BACKBONE_MULTIPLIER,
    INPUT.TRAIN_AUGMENTATION, INPUT.MIN_BOX_SIDE_TRAIN and TEST.CORRELATION_EVAL to ``cfg`` in
    place."""
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


def validate_common_config(cfg: CN) -> None:
    """Checks the keys :func:`add_common_config` adds."""
    corr, cls = cfg.MODEL.CORR_LOSS, cfg.MODEL.CLS_LOSS
    check_choice("MODEL.CORR_LOSS.TYPE", corr.TYPE, CORRELATION_KINDS)
    check_choice("MODEL.CORR_LOSS.GROUP_BY", corr.GROUP_BY, GROUP_BY_CHOICES)
    check_choice(
        "MODEL.CORR_LOSS.GROUP_REDUCTION", corr.GROUP_REDUCTION, ("auto",) + GROUP_REDUCTIONS
    )
    check_choice("MODEL.CLS_LOSS.TYPE", cls.TYPE, CLASSIFICATION_LOSS_KINDS)
    require(
        "MODEL.CORR_LOSS.WEIGHT",
        corr.WEIGHT,
        is_number(corr.WEIGHT) and corr.WEIGHT >= 0,
        "a number >= 0",
    )
    require(
        "MODEL.CORR_LOSS.RANK_STRENGTH",
        corr.RANK_STRENGTH,
        is_number(corr.RANK_STRENGTH) and corr.RANK_STRENGTH > 0,
        "a number > 0",
    )
    require(
        "MODEL.CORR_LOSS.IMAGES_PER_RHO",
        corr.IMAGES_PER_RHO,
        isinstance(corr.IMAGES_PER_RHO, int) and corr.IMAGES_PER_RHO >= 0,
        "an integer >= 0 (0: each process's own batch)",
    )
    require(
        "MODEL.CORR_LOSS.IMAGES_PER_RHO",
        corr.IMAGES_PER_RHO,
        corr.IMAGES_PER_RHO == 0 or not corr.GATHER_ACROSS_PROCESSES,
        "0 when MODEL.CORR_LOSS.GATHER_ACROSS_PROCESSES is True (that pools every process)",
    )
    require(
        "MODEL.CORR_LOSS.IMAGES_PER_RHO",
        corr.IMAGES_PER_RHO,
        corr.IMAGES_PER_RHO == 0 or corr.GROUP_BY != "image",
        "0 when MODEL.CORR_LOSS.GROUP_BY is 'image' (one ρ per image)",
    )
    require(
        "MODEL.CORR_LOSS.MIN_POSITIVES",
        corr.MIN_POSITIVES,
        isinstance(corr.MIN_POSITIVES, int) and corr.MIN_POSITIVES >= 2,
        "an integer >= 2",
    )
    require(
        "MODEL.CLS_LOSS.IA_BCE_ALPHA",
        cls.IA_BCE_ALPHA,
        is_number(cls.IA_BCE_ALPHA) and 0 <= cls.IA_BCE_ALPHA <= 1,
        "in [0, 1]",
    )
    check_choice("SOLVER.OPTIMIZER", cfg.SOLVER.OPTIMIZER, OPTIMIZERS)
    require(
        "SOLVER.BACKBONE_MULTIPLIER",
        cfg.SOLVER.BACKBONE_MULTIPLIER,
        is_number(cfg.SOLVER.BACKBONE_MULTIPLIER) and cfg.SOLVER.BACKBONE_MULTIPLIER >= 0,
        "a number >= 0",
    )
    check_choice("SOLVER.CLIP_GRADIENTS.CLIP_TYPE", cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE, CLIP_TYPES)
    check_choice("INPUT.TRAIN_AUGMENTATION", cfg.INPUT.TRAIN_AUGMENTATION, TRAIN_AUGMENTATIONS)
    require(
        "INPUT.MIN_BOX_SIDE_TRAIN",
        cfg.INPUT.MIN_BOX_SIDE_TRAIN,
        is_number(cfg.INPUT.MIN_BOX_SIDE_TRAIN) and cfg.INPUT.MIN_BOX_SIDE_TRAIN >= 0,
        "a number >= 0 (pixels; 0 keeps every box)",
    )
    correlation_eval = cfg.TEST.CORRELATION_EVAL
    require(
        "TEST.CORRELATION_EVAL.IOU_THRESHOLD",
        correlation_eval.IOU_THRESHOLD,
        is_number(correlation_eval.IOU_THRESHOLD) and 0 < correlation_eval.IOU_THRESHOLD <= 1,
        "in (0, 1]",
    )
    require(
        "TEST.CORRELATION_EVAL.BR_RECALL_TOP_N",
        correlation_eval.BR_RECALL_TOP_N,
        all(isinstance(n, int) and n >= 1 for n in correlation_eval.BR_RECALL_TOP_N),
        "a list of integers >= 1",
    )
