"""corrloss_d2's models: the meta-architectures (registered with detectron2 on import), the loss
modules they share, and the backbone builder detectron2's yaml registry lacks."""

from .atss_assignment import atss_assignment
from .backbone import build_fcos_resnet_fpn_backbone
from .classification_loss import ClassificationLoss
from .correlation_term import CorrelationLoss, CorrelationSamples, matched_box_iou
from .meta_arch import (
    CorrATSS,
    CorrDINO,
    CorrelationAwareDenseMixin,
    CorrFCOS,
    CorrRetinaNet,
    CorrSparseRCNN,
    CorrYOLACT,
)

__all__ = [
    "CorrATSS",
    "CorrDINO",
    "CorrFCOS",
    "CorrRetinaNet",
    "CorrSparseRCNN",
    "CorrYOLACT",
    "ClassificationLoss",
    "atss_assignment",
    "CorrelationAwareDenseMixin",
    "CorrelationLoss",
    "CorrelationSamples",
    "build_fcos_resnet_fpn_backbone",
    "matched_box_iou",
]
