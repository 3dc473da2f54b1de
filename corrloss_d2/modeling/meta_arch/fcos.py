"""CorrFCOS: detectron2's FCOS, configurable from yaml (MODEL.FCOS), with MODEL.CLS_LOSS and
Correlation Loss."""

import torch
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.modeling.meta_arch.fcos import FCOS, FCOSHead
from torch.nn import functional as F

from .build import check_model_config
from .dense import CorrelationAwareDenseMixin, fcos_family_arguments

__all__ = ["CorrFCOS"]


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
