"""Adaptive training sample selection (ATSS; Zhang et al., "Bridging the Gap Between
Anchor-based and Anchor-free Detection via Adaptive Training Sample Selection", CVPR 2020): the
assignment of anchors to ground truths. Plain torch (and torchvision's box IoU) on tensors:
calling it needs no detectron2."""

from typing import Sequence

import torch
from torchvision.ops import box_iou

__all__ = ["atss_assignment"]

# An anchor centre counts as inside a box when it is more than this far from every side (as in
# the released ATSS assigner), so a centre on the border is outside.
INSIDE_MARGIN = 0.01


@torch.no_grad()
def atss_assignment(
    anchors: torch.Tensor,
    num_anchors_per_level: Sequence[int],
    gt_boxes: torch.Tensor,
    topk: int = 9,
) -> torch.Tensor:
    """Assigns anchors to ground truths by ATSS.

    For each ground truth: on each level, the ``topk`` anchors whose centres are nearest its
    centre (Euclidean; all of the level's anchors when it has fewer; the lower index among equal
    distances) are its candidates; its IoU
    threshold is the mean plus the standard deviation (unbiased; 0 for a single candidate) of
    the candidates' IoUs with it; the candidates whose IoU reaches the threshold and whose centre
    lies inside the box are its positives. An anchor that is a positive of several ground truths
    goes to the one it overlaps most (the lowest index among equal IoUs).

    Args:
        anchors: (A, 4) XYXY, all levels concatenated in level order.
        num_anchors_per_level: the number of anchors of each level, summing to A.
        gt_boxes: (G, 4) XYXY ground-truth boxes of one image (G may be 0).
        topk: candidates per level and ground truth (9 in the paper).

    Returns:
        (A,) int64: the index of the ground truth each anchor is assigned to, or -1 (negative).
    """
    if anchors.dim() != 2 or anchors.shape[-1] != 4 or gt_boxes.dim() != 2:
        raise ValueError(
            f"anchors must be (A, 4) and gt_boxes (G, 4); got {tuple(anchors.shape)} and "
            f"{tuple(gt_boxes.shape)}"
        )
    if sum(num_anchors_per_level) != len(anchors):
        raise ValueError(
            f"num_anchors_per_level {list(num_anchors_per_level)} sums to "
            f"{sum(num_anchors_per_level)}, but there are {len(anchors)} anchors"
        )
    if topk < 1:
        raise ValueError(f"topk must be >= 1, got {topk}")
    assigned = torch.full((len(anchors),), -1, dtype=torch.int64, device=anchors.device)
    if len(gt_boxes) == 0 or len(anchors) == 0:
        return assigned

    # Double precision, whatever the boxes' dtype (float16 under AMP): the IoU statistics and
    # the comparisons with the thresholds do not depend on it.
    anchors, gt_boxes = anchors.double(), gt_boxes.to(anchors.device).double()
    ious = box_iou(anchors, gt_boxes)  # (A, G)
    anchor_centers = (anchors[:, :2] + anchors[:, 2:]) / 2
    gt_centers = (gt_boxes[:, :2] + gt_boxes[:, 2:]) / 2
    # Explicit differences, not torch.cdist (whose matrix-product form rounds differently).
    distances = (anchor_centers[:, None, :] - gt_centers[None, :, :]).pow(2).sum(dim=2).sqrt()

    candidates = []  # per level: (k_l, G) anchor indices
    start = 0
    for count in num_anchors_per_level:
        if count > 0:
            # Stable: among equally distant anchors the lower index comes first.
            order = distances[start : start + count].sort(dim=0, stable=True).indices
            candidates.append(order[: min(topk, count)] + start)
        start += count
    candidates = torch.cat(candidates, dim=0)  # (C, G)
    candidate_ious = ious.gather(0, candidates)  # (C, G)
    spread = (
        candidate_ious.std(dim=0) if len(candidates) > 1 else torch.zeros_like(candidate_ious[0])
    )
    threshold = candidate_ious.mean(dim=0) + spread  # (G,)

    candidate_centers = anchor_centers[candidates]  # (C, G, 2)
    distance_to_sides = torch.cat(
        [candidate_centers - gt_boxes[None, :, :2], gt_boxes[None, :, 2:] - candidate_centers],
        dim=2,
    )  # (C, G, 4): left, top, right, bottom
    positive = (candidate_ious >= threshold[None, :]) & (
        distance_to_sides.min(dim=2).values > INSIDE_MARGIN
    )

    # IoU of each (anchor, ground truth) pair that is positive, -inf elsewhere.
    positive_ious = torch.full_like(ious, float("-inf"))
    gt_index = torch.arange(len(gt_boxes), device=anchors.device).expand_as(candidates)
    positive_ious[candidates[positive], gt_index[positive]] = candidate_ious[positive]
    best_iou, best_gt = positive_ious.max(dim=1)  # first index among equal maxima
    return torch.where(best_iou > float("-inf"), best_gt, assigned)
