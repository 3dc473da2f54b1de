"""IoU-aware sigmoid classification losses: IA-BCE (Align-DETR), Quality Focal Loss (GFL) and
Varifocal Loss (VarifocalNet), and Align-DETR's prime-sample weights.

All three share one signature: ``(logits, labels, ious, *, normalizer, ..., reduction)`` where

- logits: (N, K) classification logits of N predictions (anchors, points, queries), K classes;
- labels: (N,) int64, ``0..K-1`` foreground class, ``K`` background, ``-1`` ignored;
- ious: (N,) IoU of each prediction's box with its assigned ground truth (read at foreground rows
  only); detached, treated as a constant target;
- normalizer: positive number or scalar tensor the summed loss is divided by (the number of
  positives, or of ground-truth boxes for IA-BCE);
- reduction: "sum" returns ``sum(elementwise) / normalizer``, "none" the (N, K) elementwise loss
  divided by ``normalizer`` (ignored rows are 0).

Losses are computed in float32 (float64 for float64 logits) from logits, never from ``log(p)``.
"""

from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F

__all__ = [
    "alignment_quality",
    "ia_bce_loss",
    "quality_focal_loss",
    "varifocal_loss",
    "prime_sample_weights",
    "CLASSIFICATION_LOSS_KINDS",
    "IOU_AWARE_LOSSES",
]

REDUCTIONS = ("sum", "none")


def _dense_targets(
    logits: torch.Tensor, labels: torch.Tensor, values: torch.Tensor
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Validates inputs; returns (float logits, target (N, K) holding ``values`` at each foreground
    row's class and 0 elsewhere, positive mask (N, K) bool, valid rows (N,) bool)."""
    if logits.dim() != 2 or logits.shape[1] == 0:
        raise ValueError(
            f"logits must be (N, K) with K >= 1 classes, got shape {tuple(logits.shape)}"
        )
    num_classes = logits.shape[1]
    if labels.shape != logits.shape[:1] or labels.is_floating_point():
        raise ValueError(
            f"labels must be an integer tensor of shape ({logits.shape[0]},), "
            f"got {labels.dtype} {tuple(labels.shape)}"
        )
    if values.shape != labels.shape:
        raise ValueError(f"ious must have shape ({logits.shape[0]},), got {tuple(values.shape)}")
    if labels.numel() and (int(labels.min()) < -1 or int(labels.max()) > num_classes):
        raise ValueError(
            f"labels must lie in [-1, {num_classes}] (-1 ignore, {num_classes} "
            f"background), got [{int(labels.min())}, {int(labels.max())}]"
        )
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    foreground = (labels >= 0) & (labels < num_classes)
    positive = F.one_hot(labels.clamp(min=0), num_classes + 1)[:, :num_classes].bool()
    positive &= foreground[:, None]
    target = torch.where(
        positive,
        values.detach().to(logits.dtype)[:, None],
        torch.zeros((), dtype=logits.dtype, device=logits.device),
    )
    return logits, target, positive, labels >= 0


def _reduce(
    elementwise: torch.Tensor,
    valid_rows: torch.Tensor,
    normalizer: Union[float, torch.Tensor],
    reduction: str,
) -> torch.Tensor:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    normalizer = torch.as_tensor(normalizer, dtype=elementwise.dtype, device=elementwise.device)
    if normalizer.numel() != 1 or not bool(normalizer > 0):
        raise ValueError(f"normalizer must be one positive number, got {normalizer.tolist()}")
    loss = torch.where(valid_rows[:, None], elementwise, torch.zeros_like(elementwise)) / normalizer
    return loss.sum() if reduction == "sum" else loss


def alignment_quality(probs: torch.Tensor, ious: torch.Tensor, alpha: float) -> torch.Tensor:
    """Align-DETR's quality ``s^alpha * u^(1 - alpha)`` of scores ``s`` and IoUs ``u`` (any one
    shape): the IA-BCE target before clamping, and what prime-sample weights rank by."""
    return probs.pow(alpha) * ious.pow(1 - alpha)


def ia_bce_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    ious: torch.Tensor,
    *,
    normalizer: Union[float, torch.Tensor],
    alpha: float = 0.25,
    gamma: float = 2.0,
    weights: Optional[torch.Tensor] = None,
    min_target: float = 0.01,
    reduction: str = "sum",
) -> torch.Tensor:
    """IoU-aware BCE of Align-DETR (Cai et al. 2023).

    Positive entries (row i, its class c): ``BCE(p, t * w)`` with the quality target
    ``t = clamp(s^alpha * u^(1 - alpha), min=min_target)``, ``s`` the detached probability of c,
    ``u`` the IoU, ``w`` the optional prime-sample weight. Every other entry:
    ``p^gamma * BCE(p, 0)``.
    Align-DETR normalises by the number of ground-truth boxes (averaged over processes, >= 1).

    Args:
        weights: (N,) prime-sample weights (see :func:`prime_sample_weights`) or None for 1.
    """
    logits, iou_target, positive, valid = _dense_targets(logits, labels, ious.clamp(0, 1))
    probs = torch.sigmoid(logits)
    quality = alignment_quality(probs.detach(), iou_target, alpha).clamp(min=min_target)
    if weights is not None:
        if weights.shape != labels.shape:
            raise ValueError(
                f"weights must have shape ({labels.shape[0]},), got {tuple(weights.shape)}"
            )
        quality = quality * weights.detach().to(quality.dtype)[:, None]
    target = torch.where(positive, quality, torch.zeros_like(quality))
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    elementwise = torch.where(positive, bce, probs.pow(gamma) * bce)
    return _reduce(elementwise, valid, normalizer, reduction)


def quality_focal_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    ious: torch.Tensor,
    *,
    normalizer: Union[float, torch.Tensor],
    beta: float = 2.0,
    reduction: str = "sum",
) -> torch.Tensor:
    """Quality Focal Loss of GFL (Li et al. 2020): ``|y - p|^beta * BCE(p, y)`` on every entry,
    ``y`` = IoU at each foreground row's class and 0 elsewhere. GFL normalises by the number of
    positives."""
    logits, target, _, valid = _dense_targets(logits, labels, ious.clamp(0, 1))
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    modulator = (target - torch.sigmoid(logits)).abs().pow(beta)
    return _reduce(modulator * bce, valid, normalizer, reduction)


def varifocal_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    ious: torch.Tensor,
    *,
    normalizer: Union[float, torch.Tensor],
    alpha: float = 0.75,
    gamma: float = 2.0,
    reduction: str = "sum",
) -> torch.Tensor:
    """Varifocal Loss of VarifocalNet (Zhang et al. 2021): positive entries ``q * BCE(p, q)`` with
    ``q`` the IoU; every other entry ``alpha * p^gamma * BCE(p, 0)``. VFNet normalises by the number
    of positives."""
    logits, target, positive, valid = _dense_targets(logits, labels, ious.clamp(0, 1))
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    weight = torch.where(positive, target, alpha * torch.sigmoid(logits).pow(gamma))
    return _reduce(weight * bce, valid, normalizer, reduction)


@torch.no_grad()
def prime_sample_weights(
    quality: torch.Tensor, gt_index: torch.Tensor, *, tau: float = 1.5
) -> torch.Tensor:
    """Align-DETR's prime-sample weights ``exp(-rank / tau)``.

    Args:
        quality: (N,) quality of each positive (e.g. the IA-BCE target ``s^a * u^(1-a)``).
        gt_index: (N,) integer id of the ground truth each positive is matched to; ranks are taken
            within each id's group, 0 for the highest quality (ties keep input order).
        tau: temperature > 0.
    Returns:
        (N,) weights in (0, 1], 1 for the best positive of every ground truth.
    """
    if quality.shape != gt_index.shape or quality.dim() != 1:
        raise ValueError(
            f"quality and gt_index must be 1-D of one shape, got "
            f"{tuple(quality.shape)} and {tuple(gt_index.shape)}"
        )
    if not tau > 0:
        raise ValueError(f"tau must be positive, got {tau!r}")
    if quality.numel() == 0:
        return quality.new_ones(0)
    by_quality = torch.sort(quality, descending=True, stable=True).indices
    order = by_quality[torch.sort(gt_index[by_quality], stable=True).indices]
    sorted_gt = gt_index[order]
    is_first = torch.ones_like(sorted_gt, dtype=torch.bool)
    is_first[1:] = sorted_gt[1:] != sorted_gt[:-1]
    position = torch.arange(order.numel(), device=quality.device)
    group_start = torch.cummax(
        torch.where(is_first, position, torch.zeros_like(position)), 0
    ).values
    rank = torch.empty_like(position).scatter_(0, order, position - group_start)
    return torch.exp(-rank.to(quality.dtype) / tau)


# The IoU-aware kinds of MODEL.CLS_LOSS.TYPE and their functions; "focal" is the detector's own.
IOU_AWARE_LOSSES = {"ia_bce": ia_bce_loss, "qfl": quality_focal_loss, "vfl": varifocal_loss}
CLASSIFICATION_LOSS_KINDS = ("focal",) + tuple(IOU_AWARE_LOSSES)
