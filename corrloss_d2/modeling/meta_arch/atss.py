"""CorrATSS: ATSS (Zhang et al., CVPR 2020) on detectron2's dense detector, with MODEL.CLS_LOSS
and Correlation Loss, as the released ATSS trains it (mmdetection's ``atss_r50_fpn_1x_coco.py``
and the Correlation Loss code's ``CorrATSSHead``)."""

from typing import List

import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.modeling.anchor_generator import DefaultAnchorGenerator
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.modeling.meta_arch.fcos import FCOS, FCOSHead
from detectron2.structures import Boxes, ImageList, Instances
from fvcore.nn import giou_loss
from torch import nn
from torch.nn import functional as F

from ...losses import mean_over_processes
from ..atss_assignment import atss_assignment
from .build import check_model_config
from .dense import CorrelationAwareDenseMixin, fcos_family_arguments

__all__ = ["CorrATSS", "ATSSHead", "anchor_centerness"]


def anchor_centerness(anchors: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Centerness of each anchor's centre in its box (ATSS/FCOS): sqrt(min(l, r) / max(l, r) ·
    min(t, b) / max(t, b)) from the distances l, t, r, b of the centre to the box's sides.
    anchors, boxes: (P, 4) XYXY, row i the anchor and box of pair i. Returns (P,) in [0, 1]
    (0 for a centre on or outside a side)."""
    centers = (anchors[:, :2] + anchors[:, 2:]) / 2
    left_top = (centers - boxes[:, :2]).clamp(min=0)
    right_bottom = (boxes[:, 2:] - centers).clamp(min=0)
    ratios = torch.minimum(left_top, right_bottom) / torch.maximum(left_top, right_bottom).clamp(
        min=1e-12
    )
    return ratios.prod(dim=1).sqrt()


class ATSSHead(FCOSHead):
    """detectron2's FCOS head (classification and box towers, centerness on the box tower) with
    ATSS's learnable scale of each level's box deltas (initially 1)."""

    def __init__(self, *, input_shape, conv_dims, **kwargs):
        super().__init__(input_shape=input_shape, conv_dims=conv_dims, **kwargs)
        self.scales = nn.Parameter(torch.ones(len(input_shape)))

    def forward(self, features):
        """Per level: logits (N, K, H, W), box deltas (N, 4, H, W), centerness (N, 1, H, W)."""
        logits, bbox_reg, centerness = super().forward(features)
        return logits, [reg * scale for reg, scale in zip(bbox_reg, self.scales)], centerness


@META_ARCH_REGISTRY.register()
class CorrATSS(CorrelationAwareDenseMixin, FCOS):
    """ATSS: one square anchor of side ``ANCHOR_SCALE`` × stride per location, assigned by
    :func:`~corrloss_d2.modeling.atss_assignment`; focal classification, GIoU loss on the decoded
    boxes weighted by their centerness target, centerness BCE; detection score = classification
    probability × centerness before NMS. Config MODEL.ATSS (backbone
    ``build_fcos_resnet_fpn_backbone``), MODEL.CLS_LOSS, MODEL.CORR_LOSS (the released ATSS
    computes one ρ over the batch).

    Normalisers as released: the classification and centerness losses are divided by the
    positive count of the iteration averaged over processes (no EMA), the box loss by the sum of
    the positives' centerness targets averaged over processes.

    Labels: ``gt_labels`` (N, R) in 0..K-1 for positives, K (``num_classes``) for negatives;
    ATSS ignores no anchor.
    """

    NUM_CLASSES_KEY = "MODEL.ATSS.NUM_CLASSES"
    LOSS_NORMALIZER_INITIAL = 100.0
    # The released ATSS divides by the iteration's own positive count.
    LOSS_NORMALIZER_MOMENTUM = 0.0
    box_reg_loss_type = "giou"

    @configurable
    def __init__(
        self,
        *,
        anchor_scale: float,
        anchor_offset: float,
        topk: int,
        box_loss_weight: float,
        centerness_loss_weight: float,
        **kwargs,
    ):
        """
        Args:
            anchor_scale: anchor side in units of the level's stride.
            anchor_offset: anchor centres at (i + offset) · stride (0: the released anchors).
            topk: ATSS candidates per level and ground truth.
            box_loss_weight: weight of the GIoU loss.
            centerness_loss_weight: weight of the centerness BCE (0 leaves the branch untrained,
                as the released "no auxiliary head" experiment does).
            kwargs: the arguments of :class:`detectron2.modeling.meta_arch.fcos.FCOS`, and
                ``classification_loss`` and ``correlation_loss``.
        """
        super().__init__(**kwargs)
        feature_shapes = self.backbone.output_shape()
        strides = [feature_shapes[name].stride for name in self.head_in_features]
        self.anchor_generator = DefaultAnchorGenerator(
            sizes=[[anchor_scale * stride] for stride in strides],
            aspect_ratios=[1.0],
            strides=strides,
            offset=anchor_offset,
        )
        self.topk = topk
        self.box_loss_weight = box_loss_weight
        self.centerness_loss_weight = centerness_loss_weight

    @classmethod
    def from_config(cls, cfg):
        check_model_config(cfg)
        atss = cfg.MODEL.ATSS
        return {
            **fcos_family_arguments(cfg, "ATSS", ATSSHead),
            "box2box_transform": Box2BoxTransform(weights=atss.BBOX_REG_WEIGHTS),
            "anchor_scale": atss.ANCHOR_SCALE,
            "anchor_offset": cfg.MODEL.ANCHOR_GENERATOR.OFFSET,
            "topk": atss.TOPK,
            "box_loss_weight": atss.BOX_LOSS_WEIGHT,
            "centerness_loss_weight": atss.CENTERNESS_LOSS_WEIGHT,
        }

    @torch.no_grad()
    def label_anchors(self, anchors: List[Boxes], gt_instances: List[Instances]):
        """Per image: (R,) labels (0..K-1 positives, K negatives) and (R, 4) the assigned boxes
        (zeros for negatives), by :func:`atss_assignment`."""
        num_anchors_per_level = [len(level) for level in anchors]
        all_anchors = Boxes.cat(anchors).tensor
        gt_labels, matched_gt_boxes = [], []
        for instances in gt_instances:
            boxes = instances.gt_boxes.tensor
            matched = atss_assignment(all_anchors, num_anchors_per_level, boxes, self.topk)
            positive = matched >= 0
            matched_boxes = torch.zeros_like(all_anchors)
            matched_boxes[positive] = boxes[matched[positive]].to(all_anchors.dtype)
            labels = torch.full_like(matched, self.num_classes)
            labels[positive] = instances.gt_classes[matched[positive]]
            gt_labels.append(labels)
            matched_gt_boxes.append(matched_boxes)
        return gt_labels, matched_gt_boxes

    def box_regression_loss(
        self, anchors, pred_anchor_deltas, gt_boxes, pos_mask, normalizer, positives
    ):
        """GIoU of the positives' decoded boxes, each weighted by its centerness target, divided
        by the sum of those targets averaged over processes (at least 1), times the weight."""
        pred_boxes = self.box2box_transform.apply_deltas(
            positives.pred_deltas.float(), positives.anchor_boxes
        )
        weights = anchor_centerness(positives.anchor_boxes, positives.gt_boxes)
        box_normalizer = max(mean_over_processes(weights.sum().item(), pos_mask.device), 1.0)
        loss = (giou_loss(pred_boxes, positives.gt_boxes, reduction="none") * weights).sum()
        return self.box_loss_weight * loss / box_normalizer

    def losses(
        self, anchors, pred_logits, gt_labels, pred_anchor_deltas, gt_boxes, pred_centerness
    ):
        """Same inputs as :meth:`FCOS.losses`; ``loss_corr`` added when its weight is > 0."""
        out = self.dense_losses(anchors, pred_logits, gt_labels, pred_anchor_deltas, gt_boxes)
        targets = anchor_centerness(out.positives.anchor_boxes, out.positives.gt_boxes)
        pred_centerness = torch.cat(pred_centerness, dim=1).squeeze(dim=2)  # (N, R)
        loss_ctr = F.binary_cross_entropy_with_logits(
            pred_centerness[out.pos_mask].float(), targets, reduction="sum"
        )
        return {
            "loss_atss_cls": out.cls,
            "loss_atss_box": out.box,
            "loss_atss_ctr": self.centerness_loss_weight * loss_ctr / out.normalizer,
            **out.corr,
        }

    def forward_inference(self, images: ImageList, features, predictions):
        """Detections per image; each candidate's score is its class probability times its
        centerness, before the score threshold, the per-level top-k and NMS."""
        pred_logits, pred_anchor_deltas, pred_centerness = self._transpose_dense_predictions(
            predictions, [self.num_classes, 4, 1]
        )
        anchors = self.anchor_generator(features)
        return [
            self.inference_single_image(
                anchors,
                [
                    logits[index].sigmoid() * centerness[index].sigmoid()
                    for logits, centerness in zip(pred_logits, pred_centerness)
                ],
                [deltas[index] for deltas in pred_anchor_deltas],
                image_size,
            )
            for index, image_size in enumerate(images.image_sizes)
        ]
