"""Pieces shared by the correlation-aware dense detectors (CorrRetinaNet, CorrFCOS)."""
from typing import Dict, List, NamedTuple

import torch
from fvcore.nn import sigmoid_focal_loss
from torch import nn
from torch.nn import functional as F

from detectron2.config import configurable
from detectron2.layers import cat
from detectron2.modeling.box_regression import _dense_box_regression_loss
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import Boxes
from detectron2.utils.events import get_event_storage

from ..config import validate_corrloss_config
from ..evaluation import candidates as candidate_recording
from ..losses import ia_bce_loss, mean_over_processes, quality_focal_loss, varifocal_loss
from .correlation_hook import CorrelationLossHook, matched_box_iou

__all__ = ["ClassificationLoss", "DensePositives", "DenseLosses", "CorrelationAwareDenseMixin"]


class ClassificationLoss(nn.Module):
    """Sigmoid classification loss of a detector: focal, IA-BCE, QFL or VFL.

    Called as ``loss(logits (M, K), labels (M,), ious (M,) or None, normalizer, weights=None)``
    with labels ``0..K-1`` foreground and ``K`` background (no ignored rows), ``ious`` read at
    foreground rows (needed when :attr:`uses_ious`), and ``weights`` (M,) Align-DETR prime-sample
    weights of the IA-BCE target (only for "ia_bce").
    """

    @configurable
    def __init__(self, *, kind: str = "focal", focal_alpha: float = 0.25, focal_gamma: float = 2.0,
                 ia_bce_alpha: float = 0.25, ia_bce_gamma: float = 2.0, qfl_beta: float = 2.0,
                 vfl_alpha: float = 0.75, vfl_gamma: float = 2.0):
        super().__init__()
        self.kind = kind
        self.focal_alpha, self.focal_gamma = focal_alpha, focal_gamma
        self.options = {
            "ia_bce": {"alpha": ia_bce_alpha, "gamma": ia_bce_gamma},
            "qfl": {"beta": qfl_beta},
            "vfl": {"alpha": vfl_alpha, "gamma": vfl_gamma},
        }
        self.iou_aware_fns = {"ia_bce": ia_bce_loss, "qfl": quality_focal_loss, "vfl": varifocal_loss}
        if kind != "focal" and kind not in self.iou_aware_fns:
            raise ValueError(f"classification loss must be one of focal, ia_bce, qfl, vfl; got {kind!r}")

    @classmethod
    def from_config(cls, cfg, *, focal_alpha: float, focal_gamma: float):
        validate_corrloss_config(cfg)
        c = cfg.MODEL.CLS_LOSS
        return {"kind": c.TYPE, "focal_alpha": focal_alpha, "focal_gamma": focal_gamma,
                "ia_bce_alpha": c.IA_BCE_ALPHA, "ia_bce_gamma": c.IA_BCE_GAMMA, "qfl_beta": c.QFL_BETA,
                "vfl_alpha": c.VFL_ALPHA, "vfl_gamma": c.VFL_GAMMA}

    def extra_repr(self) -> str:
        return f"kind={self.kind}"

    @property
    def uses_ious(self) -> bool:
        """False for focal loss, which ignores ``ious`` (callers may pass None)."""
        return self.kind != "focal"

    def forward(self, logits, labels, ious, normalizer, weights=None) -> torch.Tensor:
        if weights is not None and self.kind != "ia_bce":
            raise ValueError(f"prime-sample weights scale the IA-BCE target; the {self.kind!r} "
                             "classification loss takes none")
        # In float32 (or wider) whatever the head's precision (mixed-precision training).
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
        if self.kind == "focal":  # detectron2's RetinaNet / FCOS classification loss
            target = F.one_hot(labels, num_classes=logits.shape[-1] + 1)[:, :-1].to(logits.dtype)
            # fvcore's eager function, not its TorchScript copy (sigmoid_focal_loss_jit) that
            # detectron2 calls: TorchScript's profiling executor differentiates a scripted
            # function with other formulas from its second call on, so the first training step
            # of a process (a resumed run's) would round its gradients differently.
            return sigmoid_focal_loss(logits, target, alpha=self.focal_alpha,
                                          gamma=self.focal_gamma, reduction="sum") / normalizer
        options = self.options[self.kind] if weights is None else {**self.options[self.kind],
                                                                   "weights": weights}
        return self.iou_aware_fns[self.kind](logits, labels, ious, normalizer=normalizer, **options)


class DensePositives(NamedTuple):
    """The positives of a batch, P of them, in (image, anchor) row-major order.

    gt_class_logits: (P,) logit of the assigned ground-truth class (carries gradient).
    pred_boxes: (P, 4) decoded predicted boxes, XYXY, detached.
    gt_boxes: (P, 4) assigned ground-truth boxes.
    ious: (P,) IoU of pred_boxes with gt_boxes, detached, in [1e-6, 1].
    level_index: (P,) int64 FPN level of each positive. image_index: (P,) int64 image.
    """

    gt_class_logits: torch.Tensor
    pred_boxes: torch.Tensor
    gt_boxes: torch.Tensor
    ious: torch.Tensor
    level_index: torch.Tensor
    image_index: torch.Tensor


class DenseLosses(NamedTuple):
    cls: torch.Tensor
    box: torch.Tensor
    corr: Dict[str, torch.Tensor]
    pos_mask: torch.Tensor
    normalizer: float


class CorrelationAwareDenseMixin:
    """Loss computation of a detectron2 DenseDetector with a configurable classification loss and
    a :class:`CorrelationLossHook`; put it before the detector class in the bases. The detector
    provides ``num_classes``, ``box2box_transform``, ``_ema_update`` and a ``from_config``.

    In evaluation, while a correlation evaluation records (:mod:`corrloss_d2.evaluation.candidates`),
    each output also gets ``"candidates"``: the image's detections before NMS.
    """

    @configurable
    def __init__(self, *, classification_loss: ClassificationLoss,
                 correlation_hook: CorrelationLossHook, **kwargs):
        """
        Args:
            classification_loss: replaces the detector's focal loss
                (``ClassificationLoss(kind="focal")`` reproduces it).
            correlation_hook: the correlation term over the positive anchors.
            kwargs: the detector's own constructor arguments.
        """
        super().__init__(**kwargs)
        self.classification_loss = classification_loss
        self.correlation_hook = correlation_hook
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
                candidates, inputs.get("height", height), inputs.get("width", width))
        return outputs

    def _decode_multi_level_predictions(self, *args, **kwargs):
        # DenseDetector's decoding of one image, just before NMS (RetinaNet and FCOS alike).
        candidates = super()._decode_multi_level_predictions(*args, **kwargs)
        if self._recorded_candidates is not None:
            self._recorded_candidates.append(candidates)
        return candidates

    def positive_samples(self, anchors: List[Boxes], logits: torch.Tensor, gt_labels: torch.Tensor,
                         pred_anchor_deltas: List[torch.Tensor], gt_boxes: List[torch.Tensor],
                         pos_mask: torch.Tensor) -> DensePositives:
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
        level_sizes = torch.tensor([len(a) for a in anchors], device=logits.device)
        level_of_anchor = torch.repeat_interleave(torch.arange(len(anchors), device=logits.device),
                                                  level_sizes)
        with torch.no_grad():
            deltas = cat(pred_anchor_deltas, dim=1)[image_index, anchor_index]
            anchor_boxes = Boxes.cat(anchors).tensor[anchor_index]
            pred_boxes = self.box2box_transform.apply_deltas(deltas.float(), anchor_boxes)
            matched_gt = torch.stack(gt_boxes)[image_index, anchor_index]
            ious = matched_box_iou(pred_boxes, matched_gt)
        return DensePositives(gt_class_logits, pred_boxes, matched_gt, ious,
                              level_of_anchor[anchor_index], image_index)

    def dense_losses(self, anchors: List[Boxes], pred_logits: List[torch.Tensor],
                     gt_labels: List[torch.Tensor], pred_anchor_deltas: List[torch.Tensor],
                     gt_boxes: List[torch.Tensor], *, ema_initial: float, box_reg_loss_type: str,
                     smooth_l1_beta: float = 0.0) -> DenseLosses:
        """Classification, box regression and correlation terms, normalised like detectron2's
        RetinaNet/FCOS (EMA of the positive count, starting at ``ema_initial``), the count averaged
        over processes."""
        num_images = len(gt_labels)
        gt_labels = torch.stack(gt_labels)  # (N, R)
        valid_mask = gt_labels >= 0
        pos_mask = valid_mask & (gt_labels != self.num_classes)
        num_pos_anchors = pos_mask.sum().item()
        get_event_storage().put_scalar("num_pos_anchors", num_pos_anchors / num_images)
        # Every process divides by the same number and keeps the same EMA (mmdetection averages
        # the count too; detectron2's RetinaNet/FCOS use each process's own).
        normalizer = self._ema_update(
            "loss_normalizer", max(mean_over_processes(num_pos_anchors, pos_mask.device), 1),
            ema_initial)

        logits = cat(pred_logits, dim=1)
        positives = self.positive_samples(anchors, logits, gt_labels, pred_anchor_deltas, gt_boxes,
                                          pos_mask)
        ious = None
        if self.classification_loss.uses_ious:
            ious = torch.zeros(gt_labels.shape, dtype=positives.ious.dtype, device=logits.device)
            ious[pos_mask] = positives.ious
            ious = ious[valid_mask]
        loss_cls = self.classification_loss(logits[valid_mask], gt_labels[valid_mask], ious,
                                            normalizer)
        # Box losses from float32 deltas: under autocast fvcore's GIoU loss mixes dtypes and
        # fails (detectron2's FCOS too); in float32 training .float() is the identity.
        loss_box = _dense_box_regression_loss(
            anchors, self.box2box_transform, [d.float() for d in pred_anchor_deltas], gt_boxes,
            pos_mask, box_reg_loss_type=box_reg_loss_type, smooth_l1_beta=smooth_l1_beta) / normalizer
        corr = self.correlation_hook(positives.gt_class_logits, positives.pred_boxes,
                                     positives.gt_boxes, level_index=positives.level_index,
                                     image_index=positives.image_index, ious=positives.ious)
        return DenseLosses(loss_cls, loss_box, corr, pos_mask, normalizer)
