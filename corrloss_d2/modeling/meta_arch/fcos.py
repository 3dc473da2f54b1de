"""CorrFCOS: detectron2's FCOS, configurable from yaml (MODEL.FCOS), with MODEL.CLS_LOSS and
Correlation Loss."""

from typing import Any, Dict, Type

import torch
from detectron2.modeling import META_ARCH_REGISTRY, build_backbone
from detectron2.modeling.meta_arch.fcos import FCOS, FCOSHead
from torch.nn import functional as F

from ..backbone import backbone_feature_shapes
from ..classification_loss import ClassificationLoss
from ..correlation_loss import CorrelationLoss
from .build import check_model_config
from .dense import CorrelationAwareDenseMixin

__all__ = ["CorrFCOS", "fcos_family_arguments"]


def fcos_family_arguments(cfg, node_name: str, head_class: Type[FCOSHead]) -> Dict[str, Any]:
    """The constructor arguments that the FCOS-style detectors (one location per anchor point,
    classification and box towers, centerness; CorrFCOS, CorrATSS) read alike from
    ``cfg.MODEL.<node_name>``: backbone, head (``head_class``), classes, focal α/γ, test
    thresholds, pixel statistics, and the classification and correlation losses (one ρ over the
    batch, the paper's choice for these heads)."""
    node = cfg.MODEL[node_name]
    backbone = build_backbone(cfg)
    feature_shapes = backbone_feature_shapes(
        backbone, node.IN_FEATURES, f"MODEL.{node_name}.IN_FEATURES"
    )
    head = head_class(
        input_shape=feature_shapes,
        conv_dims=[feature_shapes[0].channels] * node.NUM_CONVS,
        num_classes=node.NUM_CLASSES,
        norm=node.HEAD_NORM,
        prior_prob=node.PRIOR_PROB,
    )
    return {
        "backbone": backbone,
        "head": head,
        "head_in_features": node.IN_FEATURES,
        "num_classes": node.NUM_CLASSES,
        "focal_loss_alpha": node.FOCAL_LOSS_ALPHA,
        "focal_loss_gamma": node.FOCAL_LOSS_GAMMA,
        "test_score_thresh": node.SCORE_THRESH_TEST,
        "test_topk_candidates": node.TOPK_CANDIDATES_TEST,
        "test_nms_thresh": node.NMS_THRESH_TEST,
        "max_detections_per_image": cfg.TEST.DETECTIONS_PER_IMAGE,
        "pixel_mean": cfg.MODEL.PIXEL_MEAN,
        "pixel_std": cfg.MODEL.PIXEL_STD,
        "classification_loss": ClassificationLoss(
            cfg, focal_alpha=node.FOCAL_LOSS_ALPHA, focal_gamma=node.FOCAL_LOSS_GAMMA
        ),
        "correlation_loss": CorrelationLoss(cfg, default_group_by="batch"),
    }


@META_ARCH_REGISTRY.register()
class CorrFCOS(CorrelationAwareDenseMixin, FCOS):
    """detectron2's FCOS, configurable from yaml (MODEL.FCOS, with the backbone
    ``build_fcos_resnet_fpn_backbone``), with MODEL.CLS_LOSS and MODEL.CORR_LOSS (the paper
    computes one ρ over the batch for single-stage point detectors). With CORR_LOSS.WEIGHT 0 and
    CLS_LOSS.TYPE "focal" its losses equal FCOS's. Constructor: the arguments of
    :class:`detectron2.modeling.meta_arch.fcos.FCOS` plus ``classification_loss`` and
    ``correlation_loss``."""

    NUM_CLASSES_KEY = "MODEL.FCOS.NUM_CLASSES"
    LOSS_NORMALIZER_INITIAL = 300.0
    box_reg_loss_type = "giou"  # FCOS's; detectron2's FCOS fixes it too

    @classmethod
    def from_config(cls, cfg):
        check_model_config(cfg)
        return {
            **fcos_family_arguments(cfg, "FCOS", FCOSHead),
            "center_sampling_radius": cfg.MODEL.FCOS.CENTER_SAMPLING_RADIUS,
        }

    def losses(
        self, anchors, pred_logits, gt_labels, pred_anchor_deltas, gt_boxes, pred_centerness
    ):
        """Same inputs as :meth:`FCOS.losses`; adds ``loss_corr`` when its weight is > 0."""
        out = self.dense_losses(anchors, pred_logits, gt_labels, pred_anchor_deltas, gt_boxes)
        ctrness_targets = self.compute_ctrness_targets(anchors, gt_boxes)  # (N, R)
        pred_centerness = torch.cat(pred_centerness, dim=1).squeeze(dim=2)  # (N, R)
        loss_ctr = F.binary_cross_entropy_with_logits(
            pred_centerness[out.pos_mask], ctrness_targets[out.pos_mask], reduction="sum"
        )
        return {
            "loss_fcos_cls": out.cls,
            "loss_fcos_loc": out.box,
            "loss_fcos_ctr": loss_ctr / out.normalizer,
            **out.corr,
        }
