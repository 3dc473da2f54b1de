"""Registers corrloss_d2's meta-architectures and backbones with detectron2."""
from .backbone import build_fcos_resnet_fpn_backbone
from .correlation_hook import CorrelationLossHook, matched_box_iou
from .dense import ClassificationLoss, CorrelationAwareDenseMixin
from .meta_arch import CorrFCOS, CorrRetinaNet
from .sparse_rcnn import CorrSparseRCNN

__all__ = ["CorrFCOS", "CorrRetinaNet", "CorrSparseRCNN", "ClassificationLoss", "CorrelationAwareDenseMixin",
           "CorrelationLossHook", "build_fcos_resnet_fpn_backbone", "matched_box_iou"]
