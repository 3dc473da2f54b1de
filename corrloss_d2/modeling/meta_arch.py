"""Correlation-aware RetinaNet and FCOS meta-architectures."""
import torch
from torch.nn import functional as F

from detectron2.modeling import META_ARCH_REGISTRY, build_backbone
from detectron2.modeling.meta_arch.fcos import FCOS, FCOSHead
from detectron2.modeling.meta_arch.retinanet import RetinaNet

from ..compiled_ops import check_config_compiled_ops
from ..config import validate_corrloss_config
from .backbone import backbone_feature_shapes
from .correlation_hook import CorrelationLossHook
from .dense import ClassificationLoss, CorrelationAwareDenseMixin

__all__ = ["CorrRetinaNet", "CorrFCOS"]


@META_ARCH_REGISTRY.register()
class CorrRetinaNet(CorrelationAwareDenseMixin, RetinaNet):
    """detectron2's RetinaNet with a configurable classification loss (MODEL.CLS_LOSS) and
    Correlation Loss (MODEL.CORR_LOSS; the paper groups per FPN level). With CORR_LOSS.WEIGHT 0
    and CLS_LOSS.TYPE "focal" its losses equal RetinaNet's. Constructor: the arguments of
    :class:`detectron2.modeling.RetinaNet` plus ``classification_loss`` and ``correlation_hook``."""

    @classmethod
    def from_config(cls, cfg):
        validate_corrloss_config(cfg)
        check_config_compiled_ops(cfg)
        ret = super().from_config(cfg)
        ret["classification_loss"] = ClassificationLoss(
            cfg, focal_alpha=cfg.MODEL.RETINANET.FOCAL_LOSS_ALPHA,
            focal_gamma=cfg.MODEL.RETINANET.FOCAL_LOSS_GAMMA)
        ret["correlation_hook"] = CorrelationLossHook(cfg, default_group_by="level")
        return ret

    def losses(self, anchors, pred_logits, gt_labels, pred_anchor_deltas, gt_boxes):
        """Same inputs as :meth:`RetinaNet.losses`; adds ``loss_corr`` when its weight is > 0."""
        out = self.dense_losses(anchors, pred_logits, gt_labels, pred_anchor_deltas, gt_boxes,
                                ema_initial=100, box_reg_loss_type=self.box_reg_loss_type,
                                smooth_l1_beta=self.smooth_l1_beta)
        return {"loss_cls": out.cls, "loss_box_reg": out.box, **out.corr}


@META_ARCH_REGISTRY.register()
class CorrFCOS(CorrelationAwareDenseMixin, FCOS):
    """detectron2's FCOS, configurable from yaml (MODEL.FCOS, with the backbone
    ``build_fcos_resnet_fpn_backbone``), with MODEL.CLS_LOSS and MODEL.CORR_LOSS (the paper
    computes one ρ over the batch for single-stage point detectors). With CORR_LOSS.WEIGHT 0 and
    CLS_LOSS.TYPE "focal" its losses equal FCOS's. Constructor: the arguments of
    :class:`detectron2.modeling.meta_arch.fcos.FCOS` plus ``classification_loss`` and
    ``correlation_hook``."""

    @classmethod
    def from_config(cls, cfg):
        validate_corrloss_config(cfg)
        check_config_compiled_ops(cfg)
        fcos = cfg.MODEL.FCOS
        backbone = build_backbone(cfg)
        feature_shapes = backbone_feature_shapes(backbone, fcos.IN_FEATURES, "MODEL.FCOS.IN_FEATURES")
        head = FCOSHead(input_shape=feature_shapes, conv_dims=[feature_shapes[0].channels] * fcos.NUM_CONVS,
                        num_classes=fcos.NUM_CLASSES, norm=fcos.HEAD_NORM, prior_prob=fcos.PRIOR_PROB)
        return {
            "backbone": backbone,
            "head": head,
            "head_in_features": fcos.IN_FEATURES,
            "num_classes": fcos.NUM_CLASSES,
            "center_sampling_radius": fcos.CENTER_SAMPLING_RADIUS,
            "focal_loss_alpha": fcos.FOCAL_LOSS_ALPHA,
            "focal_loss_gamma": fcos.FOCAL_LOSS_GAMMA,
            "test_score_thresh": fcos.SCORE_THRESH_TEST,
            "test_topk_candidates": fcos.TOPK_CANDIDATES_TEST,
            "test_nms_thresh": fcos.NMS_THRESH_TEST,
            "max_detections_per_image": cfg.TEST.DETECTIONS_PER_IMAGE,
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "classification_loss": ClassificationLoss(cfg, focal_alpha=fcos.FOCAL_LOSS_ALPHA,
                                                      focal_gamma=fcos.FOCAL_LOSS_GAMMA),
            "correlation_hook": CorrelationLossHook(cfg, default_group_by="batch"),
        }

    def losses(self, anchors, pred_logits, gt_labels, pred_anchor_deltas, gt_boxes, pred_centerness):
        """Same inputs as :meth:`FCOS.losses`; adds ``loss_corr`` when its weight is > 0."""
        out = self.dense_losses(anchors, pred_logits, gt_labels, pred_anchor_deltas, gt_boxes,
                                ema_initial=300, box_reg_loss_type="giou")
        ctrness_targets = self.compute_ctrness_targets(anchors, gt_boxes)  # (N, R)
        pred_centerness = torch.cat(pred_centerness, dim=1).squeeze(dim=2)  # (N, R)
        loss_ctr = F.binary_cross_entropy_with_logits(
            pred_centerness[out.pos_mask], ctrness_targets[out.pos_mask], reduction="sum")
        return {"loss_fcos_cls": out.cls, "loss_fcos_loc": out.box,
                "loss_fcos_ctr": loss_ctr / out.normalizer, **out.corr}
