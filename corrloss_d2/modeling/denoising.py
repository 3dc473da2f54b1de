"""DINO's contrastive denoising training (Zhang et al., ICLR 2023): noised copies of the ground
truths enter the decoder beside the matching queries; positive copies (small box noise) learn to
reconstruct their ground truth, negative copies (larger box noise) to predict "no object".

Layout of the D denoising queries of a batch whose images have at most G ground truths: ``groups``
blocks of 2·G queries, each block G positives (query ``2·G·g + j`` copies ground truth j) then G
negatives (query ``2·G·g + G + j``). Slots past an image's own ground-truth count are padding.
Boxes are normalised (cx, cy, w, h) in [0, 1] of the image.
"""

from typing import List, NamedTuple, Optional, Tuple

import torch
from torchvision.ops import box_convert

__all__ = ["DenoisingQueries", "contrastive_denoising_queries", "denoising_attention_mask"]


class DenoisingQueries(NamedTuple):
    """The denoising part of a batch's decoder input.

    labels: (B, D) int64 noised class of each query, -1 at padding slots.
    boxes: (B, D, 4) noised normalised (cx, cy, w, h), 0 at padding slots.
    attention_mask: (D + N, D + N) bool self-attention mask of the decoder's queries (the D
        denoising queries first, then N matching queries), True where attention is blocked.
    matches: per image, ``(query_index, gt_index)`` (G_b·groups,) int64 of its positives.
    num_groups: how many positive/negative blocks there are.
    """

    labels: torch.Tensor
    boxes: torch.Tensor
    attention_mask: torch.Tensor
    matches: List[Tuple[torch.Tensor, torch.Tensor]]
    num_groups: int


def denoising_attention_mask(
    group_size: int, num_groups: int, num_matching_queries: int, device=None
) -> torch.Tensor:
    """(D + N, D + N) bool, True where query i must not attend to key j: no matching query sees a
    denoising query (they would learn the answers), and no denoising group sees another; a
    denoising query sees its own group and the matching queries. ``group_size`` = 2·G."""
    num_denoising = group_size * num_groups
    size = num_denoising + num_matching_queries
    group = torch.arange(size, device=device) // group_size  # matching queries: >= num_groups
    is_denoising = torch.arange(size, device=device) < num_denoising
    other_group = group[:, None] != group[None, :]
    return is_denoising[None, :] & (other_group | ~is_denoising[:, None])


@torch.no_grad()
def contrastive_denoising_queries(
    gt_classes: List[torch.Tensor],
    gt_boxes: List[torch.Tensor],
    *,
    num_classes: int,
    num_matching_queries: int,
    dn_number: int = 100,
    label_noise_ratio: float = 0.5,
    box_noise_scale: float = 1.0,
    generator: Optional[torch.Generator] = None,
) -> Optional[DenoisingQueries]:
    """DINO's noised queries for a batch.

    Groups: ``max(1, dn_number // G)`` with G the largest ground-truth count of the batch (up to
    ``dn_number`` positives and as many negatives per image). Label noise: each query's class is
    replaced, with probability ``label_noise_ratio / 2``, by a class drawn uniformly from all K
    (possibly its own). Box noise: each corner moves along each axis by ``λ·(w/2 or h/2)·u`` in
    a random direction, u ~ U[0, 1) for positives and U[1, 2) for negatives, λ =
    ``box_noise_scale``; the noised box is clipped to the image, and a negative's corners that
    crossed are reordered (DINO keeps such boxes inverted).

    Args:
        gt_classes: per image, (G_b,) int64 in [0, K). gt_boxes: per image, (G_b, 4) normalised
            (cx, cy, w, h).
        num_matching_queries: N, the decoder's other queries (for the attention mask).
    Returns:
        :class:`DenoisingQueries`, or None when the batch has no ground truth or ``dn_number``
        is 0 (no denoising this step).
    """
    max_gt = max((len(c) for c in gt_classes), default=0)
    if max_gt == 0 or dn_number == 0:
        return None
    device = gt_boxes[0].device
    num_groups = max(1, dn_number // max_gt)
    slots = 2 * max_gt * num_groups
    labels = torch.full((len(gt_classes), slots), -1, dtype=torch.int64, device=device)
    boxes = torch.zeros(len(gt_classes), slots, 4, device=device)
    matches = []
    block_start = torch.arange(num_groups, device=device)[:, None] * (2 * max_gt)  # (groups, 1)
    for image, (classes, image_boxes) in enumerate(zip(gt_classes, gt_boxes)):
        count = len(classes)
        gt_index = torch.arange(count, device=device)
        positive = (block_start + gt_index).flatten()  # group-major
        negative = positive + max_gt
        copies = torch.cat([positive, negative])
        noised_classes = classes.repeat(2 * num_groups)
        flip = torch.rand(len(copies), generator=generator, device=device) < (
            label_noise_ratio * 0.5
        )
        random_classes = torch.randint(
            num_classes, (len(copies),), generator=generator, device=device
        )
        labels[image, copies] = torch.where(flip, random_classes, noised_classes)

        corners = box_convert(image_boxes.float(), "cxcywh", "xyxy").repeat(2 * num_groups, 1)
        half_sizes = (image_boxes[:, 2:].float() / 2).repeat(2 * num_groups, 2)
        magnitude = torch.rand(len(copies), 4, generator=generator, device=device)
        magnitude[len(positive) :] += 1.0  # negatives move further than any positive
        sign = torch.randint(2, (len(copies), 4), generator=generator, device=device) * 2 - 1
        noised = (corners + sign * magnitude * half_sizes * box_noise_scale).clamp(0.0, 1.0)
        # A negative's corners may cross (each moves up to a full side): reorder them, so that
        # every noised box is a valid box.
        top_left = torch.minimum(noised[:, :2], noised[:, 2:])
        bottom_right = torch.maximum(noised[:, :2], noised[:, 2:])
        boxes[image, copies] = box_convert(torch.cat([top_left, bottom_right], 1), "xyxy", "cxcywh")
        matches.append((positive, gt_index.repeat(num_groups)))  # ascending queries
    mask = denoising_attention_mask(2 * max_gt, num_groups, num_matching_queries, device)
    return DenoisingQueries(labels, boxes, mask, matches, num_groups)
