"""Correlation-aware detection losses. Pure PyTorch: nothing here imports detectron2."""
from .correlation import CORRELATION_KINDS, GroupedCorrelation, correlation_coefficients, correlation_loss
from .iou_aware import ia_bce_loss, prime_sample_weights, quality_focal_loss, varifocal_loss
from .soft_rank import SOFT_RANK_BACKENDS, grouped_soft_rank, soft_rank

__all__ = [
    "CORRELATION_KINDS",
    "GroupedCorrelation",
    "SOFT_RANK_BACKENDS",
    "correlation_coefficients",
    "correlation_loss",
    "grouped_soft_rank",
    "ia_bce_loss",
    "prime_sample_weights",
    "quality_focal_loss",
    "soft_rank",
    "varifocal_loss",
]
