"""Config keys of corrloss_d2 (yacs, Detectron2 style)."""
from detectron2.config import CfgNode as CN

from .losses import CORRELATION_KINDS

__all__ = ["add_corrloss_config", "validate_corrloss_config", "GROUPINGS"]

CLS_LOSS_TYPES = ("focal", "ia_bce", "qfl", "vfl")
GROUPINGS = ("batch", "level", "image")  # what CorrelationLossHook accepts
GROUP_BY_CHOICES = ("auto",) + GROUPINGS  # "auto": the meta-architecture's paper default


def add_corrloss_config(cfg: CN) -> None:
    """Adds MODEL.CORR_LOSS, MODEL.CLS_LOSS and MODEL.FCOS to ``cfg`` in place (call before
    ``merge_from_file``). Idempotent."""
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
    # meta-architecture: RetinaNet "level", FCOS "batch").
    cfg.MODEL.CORR_LOSS.GROUP_BY = "auto"
    # Groups with fewer positives than this are skipped (≥ 2: a correlation needs two samples).
    cfg.MODEL.CORR_LOSS.MIN_POSITIVES = 2
    # Pool the positives of all processes before computing ρ (off in the paper: one ρ per GPU).
    cfg.MODEL.CORR_LOSS.GATHER_ACROSS_PROCESSES = False

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
    cfg.MODEL.FCOS = CN()
    cfg.MODEL.FCOS.NUM_CLASSES = 80
    # Backbone features the head runs on (build_fcos_resnet_fpn_backbone gives p3..p7).
    cfg.MODEL.FCOS.IN_FEATURES = ["p3", "p4", "p5", "p6", "p7"]
    # Convolutions in each of the classification and box towers.
    cfg.MODEL.FCOS.NUM_CONVS = 4
    # Normalisation in the towers: "GN" (the FCOS recipe), "BN", "SyncBN" or "" for none.
    cfg.MODEL.FCOS.HEAD_NORM = "GN"
    # Initial foreground probability of the classification bias.
    cfg.MODEL.FCOS.PRIOR_PROB = 0.01
    cfg.MODEL.FCOS.FOCAL_LOSS_ALPHA = 0.25
    cfg.MODEL.FCOS.FOCAL_LOSS_GAMMA = 2.0
    # Points within RADIUS · stride of a box centre (and inside the box) are positives.
    cfg.MODEL.FCOS.CENTER_SAMPLING_RADIUS = 1.5
    # Inference: score threshold, candidates per level before NMS, NMS IoU threshold.
    cfg.MODEL.FCOS.SCORE_THRESH_TEST = 0.2
    cfg.MODEL.FCOS.TOPK_CANDIDATES_TEST = 1000
    cfg.MODEL.FCOS.NMS_THRESH_TEST = 0.6


def _require(key: str, value, ok: bool, allowed: str) -> None:
    if not ok:
        raise ValueError(f"cfg.{key} = {value!r} is not valid; allowed values: {allowed}")


def _check_choice(key: str, value, choices) -> None:
    _require(key, value, value in choices, ", ".join(map(repr, choices)))


def validate_corrloss_config(cfg: CN) -> None:
    """Raises ValueError naming the key, the value and the allowed values."""
    if cfg.MODEL.get("CORR_LOSS") is None:
        raise KeyError(f"cfg.MODEL.META_ARCHITECTURE = {cfg.MODEL.META_ARCHITECTURE!r} needs the "
                       "corrloss_d2 config keys: call corrloss_d2.add_corrloss_config(cfg) before "
                       "cfg.merge_from_file(...)")
    corr, cls, fcos = cfg.MODEL.CORR_LOSS, cfg.MODEL.CLS_LOSS, cfg.MODEL.FCOS
    _check_choice("MODEL.CORR_LOSS.TYPE", corr.TYPE, CORRELATION_KINDS)
    _check_choice("MODEL.CORR_LOSS.GROUP_BY", corr.GROUP_BY, GROUP_BY_CHOICES)
    _check_choice("MODEL.CLS_LOSS.TYPE", cls.TYPE, CLS_LOSS_TYPES)
    _require("MODEL.CORR_LOSS.WEIGHT", corr.WEIGHT, corr.WEIGHT >= 0, "a number >= 0")
    _require("MODEL.CORR_LOSS.RANK_STRENGTH", corr.RANK_STRENGTH, corr.RANK_STRENGTH > 0,
             "a number > 0")
    _require("MODEL.CORR_LOSS.MIN_POSITIVES", corr.MIN_POSITIVES,
             isinstance(corr.MIN_POSITIVES, int) and corr.MIN_POSITIVES >= 2, "an integer >= 2")
    _require("MODEL.CLS_LOSS.IA_BCE_ALPHA", cls.IA_BCE_ALPHA, 0 <= cls.IA_BCE_ALPHA <= 1, "in [0, 1]")
    _require("MODEL.FCOS.CENTER_SAMPLING_RADIUS", fcos.CENTER_SAMPLING_RADIUS,
             fcos.CENTER_SAMPLING_RADIUS > 0, "a number > 0")
    _check_choice("MODEL.FCOS.HEAD_NORM", fcos.HEAD_NORM, ("GN", "BN", "SyncBN", ""))
