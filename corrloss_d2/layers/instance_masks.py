"""YOLACT's mask operations (Bolya et al., ICCV 2019): a detection's mask is a linear combination
of shared prototype masks, cropped to its box; Fast NMS suppresses duplicates with one matrix of
IoUs per class."""

import torch

__all__ = ["assemble_masks", "box_crop_mask", "fast_nms"]


def box_crop_mask(boxes: torch.Tensor, height: int, width: int, padding: float = 0.0):
    """(N, height, width) bool: the pixels whose centres lie inside each box grown by ``padding``.

    Args:
        boxes: (N, 4) XYXY in the pixel units of the mask grid (pixel (i, j) covers
            [j, j + 1) x [i, i + 1)); inverted boxes are taken by their extent.
        padding: pixels added on every side (YOLACT crops with one pixel of margin).
    """
    x0 = torch.minimum(boxes[:, 0], boxes[:, 2]) - padding
    x1 = torch.maximum(boxes[:, 0], boxes[:, 2]) + padding
    y0 = torch.minimum(boxes[:, 1], boxes[:, 3]) - padding
    y1 = torch.maximum(boxes[:, 1], boxes[:, 3]) + padding
    cols = torch.arange(width, device=boxes.device, dtype=boxes.dtype) + 0.5
    rows = torch.arange(height, device=boxes.device, dtype=boxes.dtype) + 0.5
    inside_cols = (cols[None] >= x0[:, None]) & (cols[None] < x1[:, None])  # (N, W)
    inside_rows = (rows[None] >= y0[:, None]) & (rows[None] < y1[:, None])  # (N, H)
    return inside_rows[:, :, None] & inside_cols[:, None, :]


def assemble_masks(prototypes: torch.Tensor, coefficients: torch.Tensor) -> torch.Tensor:
    """Mask logits of N detections from one image's prototypes: ``prototypes · coefficients``.

    Args:
        prototypes: (k, H, W) the image's prototype masks.
        coefficients: (N, k) each detection's mask coefficients.
    Returns:
        (N, H, W) logits; ``sigmoid`` gives YOLACT's mask probabilities (crop them with
        :func:`box_crop_mask`).
    """
    if prototypes.dim() != 3 or coefficients.dim() != 2:
        raise ValueError(
            f"assemble_masks takes prototypes (k, H, W) and coefficients (N, k), got "
            f"{tuple(prototypes.shape)} and {tuple(coefficients.shape)}"
        )
    if prototypes.shape[0] != coefficients.shape[1]:
        raise ValueError(
            f"{prototypes.shape[0]} prototypes but {coefficients.shape[1]} coefficients per "
            "detection: they must be equal (MODEL.YOLACT.NUM_PROTOTYPES)"
        )
    return torch.einsum("khw,nk->nhw", prototypes, coefficients.to(prototypes.dtype))


def _pairwise_iou(boxes: torch.Tensor) -> torch.Tensor:
    """(..., M, M) IoUs of (..., M, 4) XYXY boxes with each other."""
    area = (boxes[..., 2] - boxes[..., 0]).clamp(min=0) * (boxes[..., 3] - boxes[..., 1]).clamp(
        min=0
    )
    top_left = torch.maximum(boxes[..., :, None, :2], boxes[..., None, :, :2])
    bottom_right = torch.minimum(boxes[..., :, None, 2:], boxes[..., None, :, 2:])
    inter = (bottom_right - top_left).clamp(min=0).prod(dim=-1)
    union = area[..., :, None] + area[..., None, :] - inter
    return inter / union.clamp(min=torch.finfo(boxes.dtype).tiny)


def fast_nms(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    *,
    iou_threshold: float,
    score_threshold: float,
    top_k: int,
    max_detections: int,
):
    """YOLACT's Fast NMS over multi-class scores.

    Per class, the ``top_k`` highest-scored boxes are kept when no higher-scored box among them
    overlaps them by more than ``iou_threshold``; unlike greedy NMS a box that is itself
    suppressed still suppresses (the price of doing it as one upper-triangular IoU matrix).
    Survivors scoring above ``score_threshold`` are then ranked across classes and the first
    ``max_detections`` returned.

    Args:
        boxes: (R, 4) XYXY candidate boxes (shared by the classes).
        scores: (R, C) per-class scores.
    Returns:
        ``(box_index, class_index, score)``: (D,) int64, (D,) int64, (D,) sorted decreasing.
    """
    num_boxes, num_classes = scores.shape
    k = min(top_k, num_boxes)
    top_scores, top_index = scores.t().topk(k, dim=1)  # (C, k), sorted
    iou = _pairwise_iou(boxes[top_index].float())  # (C, k, k)
    # iou[c, i, j] for higher-ranked i < j only: column j's maximum is its largest overlap with a
    # better box of its class.
    largest_overlap = iou.triu(diagonal=1).amax(dim=1) if k else top_scores
    keep = (largest_overlap <= iou_threshold) & (top_scores > score_threshold)
    class_index = torch.arange(num_classes, device=scores.device)[:, None].expand(-1, k)[keep]
    kept_scores, order = top_scores[keep].sort(descending=True)
    order = order[:max_detections]
    return top_index[keep][order], class_index[order], kept_scores[:max_detections]
