"""The base of the correlation-aware dense detectors (CorrRetinaNet, CorrFCOS, CorrATSS): their
losses over the detector's assignment, and their pre-NMS candidates for the correlation
evaluation."""

from typing import Any, Dict, List, NamedTuple, Type

import torch
from detectron2.config import configurable
from detectron2.layers import cat
from detectron2.modeling import build_backbone
from detectron2.modeling.box_regression import _dense_box_regression_loss
from detectron2.modeling.meta_arch.fcos import FCOSHead
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import Boxes
from detectron2.utils.events import get_event_storage

from ...losses import mean_over_processes
from .. import candidates as candidate_recording
from ..backbone import backbone_feature_shapes
from ..classification_loss import ClassificationLoss
from ..correlation_term import CorrelationLoss, CorrelationSamples, matched_box_iou

__all__ = [
    "DensePositives",
    "DenseLosses",
    "CorrelationAwareDenseMixin",
    "anchor_levels",
    "fcos_family_arguments",
]


def anchor_levels(anchors: List[Boxes]) -> torch.Tensor:
    """(R,) int64 FPN level of each anchor of the per-level ``anchors``, concatenated."""
    device = anchors[0].tensor.device
    level_sizes = torch.tensor([len(a) for a in anchors], device=device)
    return torch.repeat_interleave(torch.arange(len(anchors), device=device), level_sizes)


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


class DensePositives(NamedTuple):
    """The positives of a batch, P of them, in (image, anchor) row-major order: what the
    classification, box and correlation losses of a sigmoid-classifier dense detector need.

    gt_class_logits: (P,) logit of the assigned ground-truth class (carries gradient).
    pred_deltas: (P, 4) predicted box deltas (carry gradient).
    anchor_boxes: (P, 4) the positives' anchors, XYXY.
    gt_boxes: (P, 4) assigned ground-truth boxes.
    ious: (P,) IoU of the decoded predicted boxes with gt_boxes, detached, in [1e-6, 1].
    level_index: (P,) int64 FPN level of each positive. image_index: (P,) int64 image.
    """

    gt_class_logits: torch.Tensor
    pred_deltas: torch.Tensor
    anchor_boxes: torch.Tensor
    gt_boxes: torch.Tensor
    ious: torch.Tensor
    level_index: torch.Tensor
    image_index: torch.Tensor

    def correlation_samples(self) -> CorrelationSamples:
        """The correlation term's samples: ``sigmoid(gt_class_logits)`` and ``ious``, by image
        and level."""
        return CorrelationSamples.from_logits(
            self.gt_class_logits,
            self.ious,
            image_index=self.image_index,
            level_index=self.level_index,
        )


class DenseLosses(NamedTuple):
    cls: torch.Tensor
    box: torch.Tensor
    corr: Dict[str, torch.Tensor]
    pos_mask: torch.Tensor
    normalizer: float
    positives: DensePositives


class CorrelationAwareDenseMixin:
    """Loss computation of a detectron2 DenseDetector with a configurable classification loss and
    a :class:`~corrloss_d2.modeling.CorrelationLoss`; put it before the detector class in the
    bases. The detector provides ``num_classes``, ``box2box_transform``, ``box_reg_loss_type``
    (or its own :meth:`box_regression_loss`) and a ``from_config``, and sets
    :attr:`LOSS_NORMALIZER_INITIAL`.

    The losses are divided by an EMA of the positive count (as detectron2's RetinaNet/FCOS do),
    kept in the buffer ``loss_normalizer`` so that the model's state dict, and so every
    checkpoint, carries it.

    In evaluation, while a correlation evaluation records (:mod:`corrloss_d2.modeling.candidates`),
    each output also gets ``"candidates"``: the image's detections before NMS.
    """

    #: The loss normaliser's value before the first update (RetinaNet 100, FCOS 300).
    LOSS_NORMALIZER_INITIAL: float
    #: EMA momentum of the loss normaliser (detectron2's; 0 divides by the iteration's count).
    LOSS_NORMALIZER_MOMENTUM = 0.9
    #: Beta of a "smooth_l1" box loss (RetinaNet sets its own).
    smooth_l1_beta = 0.0

    @configurable
    def __init__(
        self,
        *,
        classification_loss: ClassificationLoss,
        correlation_loss: CorrelationLoss,
        **kwargs,
    ):
        """
        Args:
            classification_loss: replaces the detector's focal loss
                (``ClassificationLoss(kind="focal")`` reproduces it).
            correlation_loss: the correlation term over the positive anchors.
            kwargs: the detector's own constructor arguments.
        """
        super().__init__(**kwargs)
        self.register_buffer(
            "loss_normalizer",
            torch.tensor(float(self.LOSS_NORMALIZER_INITIAL), dtype=torch.float64),
        )
        self.classification_loss = classification_loss
        self.correlation_loss = correlation_loss
        self._recorded_candidates = None  # a list only inside a recording forward

    def forward(self, batched_inputs):
        """The detector's forward. In eval mode while :func:`candidate_recording.is_recording`,
        each output dict also gets ``"candidates"``: an ``Instances`` (``pred_boxes``, ``scores``,
        ``pred_classes``) of the image's detections before NMS (after the score threshold and the
        per-level top-k), scaled to the input's ``height``/``width`` like ``"instances"``."""
        if self.training or not candidate_recording.is_recording():
            return super().forward(batched_inputs)
        self._recorded_candidates = []
        try:
            outputs = super().forward(batched_inputs)
            recorded = self._recorded_candidates
        finally:
            self._recorded_candidates = None
        for output, candidates, inputs in zip(outputs, recorded, batched_inputs):
            height, width = candidates.image_size
            output[candidate_recording.CANDIDATES_KEY] = detector_postprocess(
                candidates, inputs.get("height", height), inputs.get("width", width)
            )
        return outputs

    def _decode_multi_level_predictions(self, *args, **kwargs):
        # DenseDetector's decoding of one image, just before NMS (RetinaNet and FCOS alike).
        candidates = super()._decode_multi_level_predictions(*args, **kwargs)
        if self._recorded_candidates is not None:
            self._recorded_candidates.append(candidates)
        return candidates

    def update_loss_normalizer(self, num_positives: float) -> float:
        """Moves the EMA towards ``num_positives`` and returns its new value (a Python float,
        computed in double precision like detectron2's ``_ema_update``)."""
        momentum = self.LOSS_NORMALIZER_MOMENTUM
        value = self.loss_normalizer.item() * momentum + num_positives * (1 - momentum)
        self.loss_normalizer.fill_(value)
        return value

    def box_regression_loss(
        self,
        anchors: List[Boxes],
        pred_anchor_deltas: List[torch.Tensor],
        gt_boxes: List[torch.Tensor],
        pos_mask: torch.Tensor,
        normalizer: float,
        positives: DensePositives,
    ) -> torch.Tensor:
        """detectron2's dense box loss of the positives (``self.box_reg_loss_type``, with
        ``self.smooth_l1_beta`` for smooth L1) divided by ``normalizer``. Shapes as in
        :meth:`positive_samples`; ``positives`` (gathered already) serve a detector's own box
        loss."""
        # Float32 deltas: under autocast fvcore's GIoU loss mixes dtypes and fails (detectron2's
        # FCOS too); in float32 training .float() is the identity.
        loss = _dense_box_regression_loss(
            anchors,
            self.box2box_transform,
            [d.float() for d in pred_anchor_deltas],
            gt_boxes,
            pos_mask,
            box_reg_loss_type=self.box_reg_loss_type,
            smooth_l1_beta=self.smooth_l1_beta,
        )
        return loss / normalizer

    def positive_samples(
        self,
        anchors: List[Boxes],
        logits: torch.Tensor,
        gt_labels: torch.Tensor,
        pred_anchor_deltas: List[torch.Tensor],
        gt_boxes: List[torch.Tensor],
        pos_mask: torch.Tensor,
    ) -> DensePositives:
        """
        Args:
            anchors: per level, (R_l,) Boxes. logits: (N, R, K) all levels concatenated.
            gt_labels: (N, R) labels (-1 ignore, 0..K-1 foreground, K background).
            pred_anchor_deltas: per level (N, R_l, 4). gt_boxes: per image (R, 4).
            pos_mask: (N, R) bool foreground anchors.
        """
        image_index, anchor_index = pos_mask.nonzero(as_tuple=True)
        labels = gt_labels[image_index, anchor_index]
        gt_class_logits = logits[image_index, anchor_index, labels]
        level_of_anchor = anchor_levels(anchors)
        deltas = cat(pred_anchor_deltas, dim=1)[image_index, anchor_index]
        with torch.no_grad():
            anchor_boxes = Boxes.cat(anchors).tensor[anchor_index]
            pred_boxes = self.box2box_transform.apply_deltas(deltas.float(), anchor_boxes)
            matched_gt = torch.stack(gt_boxes)[image_index, anchor_index]
            ious = matched_box_iou(pred_boxes, matched_gt)
        return DensePositives(
            gt_class_logits,
            deltas,
            anchor_boxes,
            matched_gt,
            ious,
            level_of_anchor[anchor_index],
            image_index,
        )

    def dense_losses(
        self,
        anchors: List[Boxes],
        pred_logits: List[torch.Tensor],
        gt_labels: List[torch.Tensor],
        pred_anchor_deltas: List[torch.Tensor],
        gt_boxes: List[torch.Tensor],
    ) -> DenseLosses:
        """Classification, box regression (:meth:`box_regression_loss`) and correlation terms,
        normalised like detectron2's RetinaNet/FCOS (EMA of the positive count, see the class),
        the count averaged over processes."""
        num_images = len(gt_labels)
        gt_labels = torch.stack(gt_labels)  # (N, R)
        valid_mask = gt_labels >= 0
        pos_mask = valid_mask & (gt_labels != self.num_classes)
        num_pos_anchors = pos_mask.sum().item()
        get_event_storage().put_scalar("num_pos_anchors", num_pos_anchors / num_images)
        # Every process divides by the same number and keeps the same EMA (mmdetection averages
        # the count too; detectron2's RetinaNet/FCOS use each process's own).
        normalizer = self.update_loss_normalizer(
            max(mean_over_processes(num_pos_anchors, pos_mask.device), 1)
        )

        logits = cat(pred_logits, dim=1)
        positives = self.positive_samples(
            anchors, logits, gt_labels, pred_anchor_deltas, gt_boxes, pos_mask
        )
        ious = None
        if self.classification_loss.uses_ious:
            ious = torch.zeros(gt_labels.shape, dtype=positives.ious.dtype, device=logits.device)
            ious[pos_mask] = positives.ious
            ious = ious[valid_mask]
        loss_cls = self.classification_loss(
            logits[valid_mask], gt_labels[valid_mask], ious, normalizer
        )
        loss_box = self.box_regression_loss(
            anchors, pred_anchor_deltas, gt_boxes, pos_mask, normalizer, positives
        )
        corr = self.correlation_loss(positives.correlation_samples())
        return DenseLosses(loss_cls, loss_box, corr, pos_mask, normalizer, positives)
