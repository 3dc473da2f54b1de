"""YOLACT's training losses (Bolya et al., ICCV 2019, as mmdetection's YOLACT, which the
Correlation Loss code extends): softmax cross-entropy with hard-negative mining, the prototype
mask loss normalised by box area, and the auxiliary semantic segmentation loss."""

import torch
import torch.nn.functional as F

__all__ = [
    "cropped_mask_loss",
    "ohem_cross_entropy",
    "semantic_segmentation_loss",
]


def ohem_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, *, background: int, neg_pos_ratio: float
) -> torch.Tensor:
    """Summed softmax cross-entropy of one image's positives and of its hardest negatives.

    Negatives are ranked by their own cross-entropy and the ``neg_pos_ratio`` x #positives
    hardest are kept (all of them when the image has no positive, as mmdetection's YOLACT head).

    Args:
        logits: (R, C + 1) class logits, the last column (index ``background``) background.
        labels: (R,) int64 in {-1 ignore, 0..C-1 foreground, ``background``}.
    Returns:
        scalar, the sum (the caller divides by its normaliser).
    """
    if logits.shape[:1] != labels.shape or logits.dim() != 2:
        raise ValueError(
            f"ohem_cross_entropy takes logits (R, C + 1) and labels (R,), got "
            f"{tuple(logits.shape)} and {tuple(labels.shape)}"
        )
    valid = labels >= 0
    per_anchor = F.cross_entropy(logits[valid].float(), labels[valid], reduction="none")
    labels = labels[valid]
    positive = labels != background
    num_positives = int(positive.sum())
    negative_losses = per_anchor[~positive]
    num_negatives = negative_losses.numel()
    if num_positives:
        num_negatives = min(int(neg_pos_ratio * num_positives), num_negatives)
    hardest = negative_losses.topk(num_negatives).values
    return per_anchor[positive].sum() + hardest.sum()


def cropped_mask_loss(
    mask_logits: torch.Tensor,
    targets: torch.Tensor,
    crop: torch.Tensor,
    box_areas: torch.Tensor,
) -> torch.Tensor:
    """Per-mask binary cross-entropy over the pixels of its crop, divided by its box area.

    YOLACT crops the predicted mask to the box, so pixels outside contribute nothing; dividing
    by the area keeps small objects from being drowned by large ones.

    Args:
        mask_logits: (P, H, W) logits of the assembled masks (prototypes · coefficients).
        targets: (P, H, W) ground-truth masks in {0, 1} on the same grid.
        crop: (P, H, W) bool, the pixels each mask is evaluated on.
        box_areas: (P,) ground-truth box areas in pixels of the grid (clamped at 1 pixel).
    Returns:
        (P,) float32 losses.
    """
    if not (mask_logits.shape == targets.shape == crop.shape) or box_areas.shape != (
        mask_logits.shape[0],
    ):
        raise ValueError(
            "cropped_mask_loss takes mask_logits, targets and crop of one shape (P, H, W) and "
            f"box_areas (P,), got {tuple(mask_logits.shape)}, {tuple(targets.shape)}, "
            f"{tuple(crop.shape)} and {tuple(box_areas.shape)}"
        )
    bce = F.binary_cross_entropy_with_logits(mask_logits.float(), targets.float(), reduction="none")
    return (bce * crop).sum(dim=(1, 2)) / box_areas.float().clamp(min=1.0)


def semantic_segmentation_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-class sigmoid cross-entropy of a semantic map, summed and divided by N·H·W.

    Args:
        logits: (N, C, H, W). targets: (N, C, H, W) in {0, 1} (1 where some instance of the class
            covers the pixel).
    """
    if logits.shape != targets.shape or logits.dim() != 4:
        raise ValueError(
            f"semantic_segmentation_loss takes logits and targets (N, C, H, W), got "
            f"{tuple(logits.shape)} and {tuple(targets.shape)}"
        )
    n, _, h, w = logits.shape
    total = F.binary_cross_entropy_with_logits(logits.float(), targets.float(), reduction="sum")
    return total / max(n * h * w, 1)
