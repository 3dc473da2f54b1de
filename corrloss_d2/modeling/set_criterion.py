"""The set-prediction losses of the query-based detectors — Sparse R-CNN (Sun et al., CVPR 2021)
and the DETR family (DINO, Zhang et al., ICLR 2023) — with Correlation Loss on every stage or
decoder layer (Kahraman et al., AAAI 2023) and Align-DETR's IA-BCE, mixed matching and
prime-sample weights (Cai et al., 2023).

Conventions: B images, N queries (proposals), K classes. Boxes are XYXY in the pixels of the
(resized) input image unless a name says otherwise.
"""

from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch
from detectron2.structures import Instances
from detectron2.utils.events import get_event_storage
from fvcore.nn import giou_loss
from torch import nn

from ..losses import (
    alignment_quality,
    capped_matches_per_target,
    mean_over_processes,
    normalized_box_coordinates,
    one_to_k_assignment,
    prime_sample_weights,
    set_matching_cost,
)
from .classification_loss import ClassificationLoss
from .correlation_term import CorrelationLoss, CorrelationSamples, matched_box_iou
from .set_prediction import SetPrediction

__all__ = ["BatchTargets", "SetCriterion", "set_criterion_from_config"]


class BatchTargets(NamedTuple):
    """The batch's ground truths concatenated over images: classes (G,) int64, boxes (G, 4)
    float32, and offsets (B,) the index of each image's first ground truth."""

    classes: torch.Tensor
    boxes: torch.Tensor
    offsets: torch.Tensor

    @classmethod
    def cat(cls, targets: List[Instances]) -> "BatchTargets":
        classes = torch.cat([t.gt_classes for t in targets])
        counts = torch.tensor([len(t) for t in targets], device=classes.device)
        return cls(
            classes,
            torch.cat([t.gt_boxes.tensor for t in targets]).float(),
            torch.cumsum(counts, 0) - counts,
        )


class SetCriterion(nn.Module):
    """Hungarian matching and losses of a query-based detector with deep supervision:
    ``class_weight·cls + l1_weight·L1 + giou_weight·GIoU`` on every stage (decoder layer), each
    normalised by the number of ground-truth boxes averaged over processes (at least 1), plus the
    Correlation Loss of each stage's matched queries. The matching cost weighs the same terms
    with its own ``cost_*_weight``. L1 compares boxes divided by the image size, as corners
    (``l1_box_format`` "xyxy": Sparse R-CNN) or as centre and size ("cxcywh": DETR).

    Mixed matching (``one_to_many_k`` > 0): every stage but the last matches each ground truth to
    k queries (capped at ⌊0.5·N / #gt⌋, at least 1); the last stage stays one-to-one. Prime-sample
    weights (``prime_sample_tau`` > 0): within each ground truth's group, ``exp(−rank/τ)`` by the
    detached quality ``s^α·IoU^(1−α)`` (α of IA-BCE) scales the L1/GIoU terms and, with IA-BCE,
    the classification target.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        classification_loss: ClassificationLoss,
        correlation_loss: CorrelationLoss,
        class_weight: float = 2.0,
        l1_weight: float = 5.0,
        giou_weight: float = 2.0,
        cost_class_weight: float = 2.0,
        cost_l1_weight: float = 5.0,
        cost_giou_weight: float = 2.0,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        one_to_many_k: int = 0,
        prime_sample_tau: float = 0.0,
        quality_alpha: float = 0.25,
        l1_box_format: str = "xyxy",
        divergence_hint: str = "Lower SOLVER.BASE_LR or keep SOLVER.CLIP_GRADIENTS enabled.",
    ):
        """
        Args:
            divergence_hint: the advice that ends the error raised when a stage's predictions
                are no longer finite (see :meth:`check_diverged`).
        """
        super().__init__()
        self.num_classes = num_classes
        self.classification_loss = classification_loss
        self.correlation_loss = correlation_loss
        self.loss_weights = {"cls": class_weight, "bbox": l1_weight, "giou": giou_weight}
        self.cost_weights = {
            "cls": cost_class_weight,
            "bbox": cost_l1_weight,
            "giou": cost_giou_weight,
        }
        self.focal_alpha, self.focal_gamma = focal_alpha, focal_gamma
        self.one_to_many_k = one_to_many_k
        self.prime_sample_tau = prime_sample_tau
        self.quality_alpha = quality_alpha
        self.l1_box_format = l1_box_format
        self.divergence_hint = divergence_hint

    def matches_per_target(self, stage: int, num_stages: int) -> int:
        """k of the stage before capping: 1 on the last stage or without mixed matching."""
        return 1 if stage == num_stages - 1 or self.one_to_many_k == 0 else self.one_to_many_k

    @torch.no_grad()
    def match(
        self, output: SetPrediction, targets: List[Instances], image_whwh: torch.Tensor, k: int
    ) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        """Per image, ``(query_index, gt_index)`` (M_b,) int64 pairs of a one-to-k assignment."""
        matches = []
        for logits, boxes, target, whwh in zip(output.logits, output.boxes, targets, image_whwh):
            cost = set_matching_cost(
                logits,
                boxes,
                target.gt_classes,
                target.gt_boxes.tensor,
                whwh,
                class_weight=self.cost_weights["cls"],
                l1_weight=self.cost_weights["bbox"],
                giou_weight=self.cost_weights["giou"],
                focal_alpha=self.focal_alpha,
                focal_gamma=self.focal_gamma,
                l1_box_format=self.l1_box_format,
            )
            capped = capped_matches_per_target(k, logits.shape[0], len(target))
            matches.append(one_to_k_assignment(cost, capped))
        return matches

    def forward(
        self,
        outputs: List[SetPrediction],
        targets: List[Instances],
        image_whwh: torch.Tensor,
        *,
        suffixes: Optional[Sequence[str]] = None,
        correlated: Optional[Sequence[bool]] = None,
        normalizer: Optional[float] = None,
    ) -> Dict[str, torch.Tensor]:
        """
        Args:
            outputs: per stage, logits (B, N, K) and boxes (B, N, 4); the last is one-to-one.
            targets: per image, Instances with gt_boxes and gt_classes (0..K-1).
            image_whwh: (B, 4) width, height, width, height of each input image.
            suffixes: the name of each stage's losses and metrics (default ``_stage{i}``).
            correlated: whether each stage gets the Correlation Loss (default: all).
            normalizer: :meth:`num_boxes_normalizer` when the caller already computed it (a
                detector with further losses normalised by it), else computed here.
        Returns:
            ``loss_{cls,bbox,giou}{suffix}`` and, when its weight is > 0, ``loss_corr{suffix}``.
        """
        suffixes = suffixes or [f"_stage{i}" for i in range(len(outputs))]
        correlated = correlated or [True] * len(outputs)
        if not len(suffixes) == len(correlated) == len(outputs):
            raise ValueError(
                f"{len(outputs)} stages need as many suffixes and correlated flags, got "
                f"{len(suffixes)} and {len(correlated)}"
            )
        if normalizer is None:
            normalizer = self.num_boxes_normalizer(targets, image_whwh.device)
        batch_targets = BatchTargets.cat(targets)
        losses = {}
        for stage, (output, suffix, with_correlation) in enumerate(
            zip(outputs, suffixes, correlated)
        ):
            self.check_diverged(output, suffix)
            k = self.matches_per_target(stage, len(outputs))
            matches = self.match(output, targets, image_whwh, k)
            losses.update(
                self.stage_losses(
                    output,
                    batch_targets,
                    image_whwh,
                    matches,
                    normalizer,
                    suffix=suffix,
                    correlated=with_correlation,
                )
            )
        return losses

    def check_diverged(self, output: SetPrediction, suffix: str) -> None:
        """FloatingPointError naming the stage and the iteration when a stage predicts NaN/inf
        logits or boxes, or inverted boxes (x2 < x1: learnable proposals of negative size), the
        signs of a diverged run; matching or GIoU would otherwise fail deep inside."""
        problem = None
        if not (torch.isfinite(output.logits).all() and torch.isfinite(output.boxes).all()):
            problem = "NaN or infinite logits or boxes"
        elif (output.boxes[..., 2:] < output.boxes[..., :2]).any():
            problem = "inverted boxes (x2 < x1 or y2 < y1)"
        if problem:
            raise FloatingPointError(
                f"the predictions of {suffix.lstrip('_')} are {problem} at iteration "
                f"{get_event_storage().iter}: training diverged. {self.divergence_hint}"
            )

    @staticmethod
    def num_boxes_normalizer(targets: List[Instances], device) -> float:
        """Ground-truth boxes of the batch, averaged over processes, at least 1."""
        return max(mean_over_processes(sum(len(t) for t in targets), device), 1.0)

    def stage_losses(
        self,
        output: SetPrediction,
        targets: BatchTargets,
        image_whwh: torch.Tensor,
        matches: List[Tuple[torch.Tensor, torch.Tensor]],
        normalizer: float,
        *,
        suffix: str,
        correlated: bool = True,
        prime_weighted: bool = True,
    ) -> Dict[str, torch.Tensor]:
        """Losses of one stage given its matches (see :meth:`match`; denoising queries come with
        theirs), the Correlation Loss of the matched queries included when ``correlated``, the
        prime-sample weights (when ``prime_sample_tau`` > 0) when ``prime_weighted``."""
        num_images, num_proposals, num_classes = output.logits.shape
        image_index = torch.cat([torch.full_like(q, b) for b, (q, _) in enumerate(matches)])
        query_index = torch.cat([q for q, _ in matches])
        gt_index = torch.cat([g + offset for (_, g), offset in zip(matches, targets.offsets)])
        gt_classes, gt_boxes = targets.classes[gt_index], targets.boxes[gt_index]

        logits = output.logits.float()
        matched_logits = logits[image_index, query_index, gt_classes]
        matched_boxes = output.boxes[image_index, query_index].float()
        ious = matched_box_iou(matched_boxes.detach(), gt_boxes)
        weights = None
        if self.prime_sample_tau > 0 and prime_weighted:
            quality = alignment_quality(
                torch.sigmoid(matched_logits.detach()), ious, self.quality_alpha
            )
            weights = prime_sample_weights(quality, gt_index, tau=self.prime_sample_tau)

        flat_index = image_index * num_proposals + query_index
        labels = torch.full(
            (num_images * num_proposals,), num_classes, dtype=torch.int64, device=logits.device
        )
        labels[flat_index] = gt_classes
        row_ious = row_weights = None
        if self.classification_loss.uses_ious:
            row_ious = torch.zeros_like(labels, dtype=ious.dtype).index_put_((flat_index,), ious)
        if weights is not None and self.classification_loss.kind == "ia_bce":
            row_weights = torch.ones_like(labels, dtype=weights.dtype).index_put_(
                (flat_index,), weights
            )
        loss_cls = self.classification_loss(
            logits.flatten(0, 1), labels, row_ious, normalizer, weights=row_weights
        )

        whwh = image_whwh[image_index]
        loss_l1 = (
            (
                normalized_box_coordinates(matched_boxes, whwh, self.l1_box_format)
                - normalized_box_coordinates(gt_boxes, whwh, self.l1_box_format)
            )
            .abs()
            .sum(dim=1)
        )
        loss_giou = giou_loss(matched_boxes, gt_boxes, reduction="none")
        if weights is not None:
            loss_l1, loss_giou = loss_l1 * weights, loss_giou * weights
        unweighted = {
            "cls": loss_cls,
            "bbox": loss_l1.sum() / normalizer,
            "giou": loss_giou.sum() / normalizer,
        }
        losses = {
            f"loss_{name}{suffix}": self.loss_weights[name] * value
            for name, value in unweighted.items()
        }
        if not correlated:
            return losses
        samples = CorrelationSamples.from_logits(matched_logits, ious, image_index=image_index)
        losses.update(self.correlation_loss(samples, name_suffix=suffix))
        return losses


def set_criterion_from_config(
    cfg, node: str, *, l1_box_format: str, divergence_hint: str
) -> SetCriterion:
    """The :class:`SetCriterion` of a query detector from the keys its config node ``node``
    ("SPARSE_RCNN" or "DINO" of cfg.MODEL) shares with the other (class count, loss and cost
    weights, focal α/γ, ONE_TO_MANY_K, PRIME_SAMPLE_TAU), MODEL.CLS_LOSS and MODEL.CORR_LOSS
    (one ρ per stage over the batch unless GROUP_BY says otherwise)."""
    keys = cfg.MODEL[node]
    return SetCriterion(
        num_classes=keys.NUM_CLASSES,
        classification_loss=ClassificationLoss(
            cfg, focal_alpha=keys.FOCAL_LOSS_ALPHA, focal_gamma=keys.FOCAL_LOSS_GAMMA
        ),
        correlation_loss=CorrelationLoss(cfg, default_group_by="batch"),
        class_weight=keys.CLASS_WEIGHT,
        l1_weight=keys.L1_WEIGHT,
        giou_weight=keys.GIOU_WEIGHT,
        cost_class_weight=keys.COST_CLASS_WEIGHT,
        cost_l1_weight=keys.COST_L1_WEIGHT,
        cost_giou_weight=keys.COST_GIOU_WEIGHT,
        focal_alpha=keys.FOCAL_LOSS_ALPHA,
        focal_gamma=keys.FOCAL_LOSS_GAMMA,
        one_to_many_k=keys.ONE_TO_MANY_K,
        prime_sample_tau=keys.PRIME_SAMPLE_TAU,
        quality_alpha=cfg.MODEL.CLS_LOSS.IA_BCE_ALPHA,
        l1_box_format=l1_box_format,
        divergence_hint=divergence_hint,
    )
