"""Correlation-aware detection losses. Pure PyTorch: nothing here imports detectron2."""

from .correlation import (
    CORRELATION_KINDS,
    GroupedCorrelation,
    correlation_coefficients,
    correlation_loss,
)
from .distributed import mean_over_processes
from .instance_masks import cropped_mask_loss, ohem_cross_entropy, semantic_segmentation_loss
from .iou_aware import (
    CLASSIFICATION_LOSS_KINDS,
    IOU_AWARE_LOSSES,
    alignment_quality,
    ia_bce_loss,
    prime_sample_weights,
    quality_focal_loss,
    varifocal_loss,
)
from .set_matching import (
    BOX_L1_FORMATS,
    capped_matches_per_target,
    normalized_box_coordinates,
    one_to_k_assignment,
    set_matching_cost,
)
from .soft_rank import SOFT_RANK_BACKENDS, grouped_soft_rank, soft_rank

__all__ = [
    "BOX_L1_FORMATS",
    "CLASSIFICATION_LOSS_KINDS",
    "CORRELATION_KINDS",
    "GroupedCorrelation",
    "IOU_AWARE_LOSSES",
    "SOFT_RANK_BACKENDS",
    "alignment_quality",
    "capped_matches_per_target",
    "correlation_coefficients",
    "correlation_loss",
    "cropped_mask_loss",
    "grouped_soft_rank",
    "ia_bce_loss",
    "mean_over_processes",
    "normalized_box_coordinates",
    "ohem_cross_entropy",
    "one_to_k_assignment",
    "prime_sample_weights",
    "quality_focal_loss",
    "semantic_segmentation_loss",
    "set_matching_cost",
    "soft_rank",
    "varifocal_loss",
]
