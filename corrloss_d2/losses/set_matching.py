"""Bipartite matching of query-based detectors (Sparse R-CNN, DETR family): the matching cost and
the one-to-k Hungarian assignment of Align-DETR's mixed matching.

Conventions: Q queries, G ground truths, K classes; boxes are XYXY in image pixels.
"""

from typing import Tuple

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torchvision.ops import box_convert, generalized_box_iou

__all__ = [
    "BOX_L1_FORMATS",
    "normalized_box_coordinates",
    "set_matching_cost",
    "capped_matches_per_target",
    "one_to_k_assignment",
]

# Coordinates the L1 box cost and loss compare: Sparse R-CNN's corners, DETR's centre and size.
BOX_L1_FORMATS = ("xyxy", "cxcywh")


def normalized_box_coordinates(
    boxes: torch.Tensor, image_whwh: torch.Tensor, box_format: str = "xyxy"
) -> torch.Tensor:
    """(..., 4) XYXY pixel boxes divided by the image size (``image_whwh`` broadcast against
    them), as corners (``"xyxy"``) or as centre and size (``"cxcywh"``)."""
    if box_format not in BOX_L1_FORMATS:
        raise ValueError(f"box_format must be one of {BOX_L1_FORMATS}, got {box_format!r}")
    return box_convert(boxes / image_whwh, "xyxy", box_format)


def set_matching_cost(
    logits: torch.Tensor,
    pred_boxes: torch.Tensor,
    gt_classes: torch.Tensor,
    gt_boxes: torch.Tensor,
    image_whwh: torch.Tensor,
    *,
    class_weight: float = 2.0,
    l1_weight: float = 5.0,
    giou_weight: float = 2.0,
    focal_alpha: float = 0.25,
    focal_gamma: float = 2.0,
    l1_box_format: str = "xyxy",
) -> torch.Tensor:
    """The matching cost ``class_weight·focal + l1_weight·L1 − giou_weight·GIoU`` of Sparse R-CNN
    and the DETR family.

    The focal class cost is the focal loss of predicting the ground truth's class minus that of
    not predicting it; L1 is taken on boxes divided by the image size, as corners
    (``l1_box_format`` "xyxy", Sparse R-CNN) or as centre and size ("cxcywh", DETR).

    Args:
        logits: (Q, K) class logits. pred_boxes: (Q, 4). gt_classes: (G,) int64 in [0, K).
        gt_boxes: (G, 4). image_whwh: (4,) image width, height, width, height.
    Returns:
        (Q, G) float32 (or wider) cost; no gradient.
    """
    dtype = torch.promote_types(logits.dtype, torch.float32)
    logits, pred_boxes, gt_boxes = (t.detach().to(dtype) for t in (logits, pred_boxes, gt_boxes))
    probs = torch.sigmoid(logits)
    # -log(p) = softplus(-x) and -log(1 - p) = softplus(x): finite for any finite logit.
    positive = focal_alpha * (1 - probs).pow(focal_gamma) * F.softplus(-logits)
    negative = (1 - focal_alpha) * probs.pow(focal_gamma) * F.softplus(logits)
    class_cost = (positive - negative)[:, gt_classes]
    scale = image_whwh.to(dtype)
    l1_cost = torch.cdist(
        normalized_box_coordinates(pred_boxes, scale, l1_box_format),
        normalized_box_coordinates(gt_boxes, scale, l1_box_format),
        p=1,
    )
    giou = generalized_box_iou(pred_boxes, gt_boxes)
    return class_weight * class_cost + l1_weight * l1_cost - giou_weight * giou


def capped_matches_per_target(k: int, num_queries: int, num_targets: int) -> int:
    """Align-DETR's cap on queries per ground truth: ``min(k, ⌊0.5·Q / G⌋)``, at least 1."""
    if num_targets == 0:
        return max(k, 1)
    return max(1, min(k, (num_queries // 2) // num_targets))


def one_to_k_assignment(cost: torch.Tensor, k: int = 1) -> Tuple[torch.Tensor, torch.Tensor]:
    """Minimum-cost assignment where each ground truth gets up to ``k`` distinct queries and no
    query gets two ground truths: one Hungarian solve of the cost tiled ``k`` times along the
    ground truths. ``k`` is used as given (cap it with :func:`capped_matches_per_target`).

    With ``k·G > Q`` only Q pairs are formed (some ground truths get fewer queries); with G = 0
    the result is empty.

    Args:
        cost: (Q, G) finite matching cost.
        k: queries per ground truth, >= 1.
    Returns:
        ``(query_index, gt_index)``, two (M,) int64 tensors on ``cost``'s device, sorted by query,
        M = min(Q, k·G).
    """
    if cost.dim() != 2:
        raise ValueError(f"cost must be (num_queries, num_targets), got shape {tuple(cost.shape)}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    num_targets = cost.shape[1]
    device = cost.device
    if num_targets == 0 or cost.shape[0] == 0:
        empty = torch.zeros(0, dtype=torch.int64, device=device)
        return empty, empty
    tiled = cost.detach().repeat(1, k).cpu().numpy()  # column j is ground truth j % G
    if not np.isfinite(tiled).all():
        raise ValueError("the matching cost has NaN or infinite entries (non-finite predictions)")
    rows, cols = linear_sum_assignment(tiled)
    return (
        torch.as_tensor(rows, dtype=torch.int64, device=device),
        torch.as_tensor(cols % num_targets, dtype=torch.int64, device=device),
    )
