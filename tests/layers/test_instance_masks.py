"""YOLACT's mask assembly, box crop and Fast NMS against hand-written definitions."""

import itertools

import pytest
import torch

from corrloss_d2.layers import assemble_masks, box_crop_mask, fast_nms


def test_assembled_masks_are_the_coefficient_weighted_sums_of_the_prototypes():
    gen = torch.Generator().manual_seed(0)
    prototypes = torch.rand(4, 5, 6, generator=gen)
    coefficients = torch.rand(3, 4, generator=gen) * 2 - 1
    masks = assemble_masks(prototypes, coefficients)
    assert masks.shape == (3, 5, 6)
    for n, y, x in itertools.product(range(3), range(5), range(6)):
        expected = sum(prototypes[k, y, x] * coefficients[n, k] for k in range(4))
        assert masks[n, y, x].item() == pytest.approx(expected.item(), abs=1e-6)


def test_assembling_with_the_wrong_number_of_coefficients_names_the_key():
    with pytest.raises(ValueError, match="NUM_PROTOTYPES"):
        assemble_masks(torch.zeros(4, 5, 6), torch.zeros(3, 5))
    with pytest.raises(ValueError, match=r"\(k, H, W\)"):
        assemble_masks(torch.zeros(4, 5), torch.zeros(3, 4))


@pytest.mark.parametrize("padding", [0.0, 1.0])
def test_crop_keeps_the_pixels_whose_centres_lie_in_the_grown_box(padding):
    boxes = torch.tensor([[1.0, 2.0, 4.5, 3.2], [5.0, 0.0, 2.0, 4.0], [0.0, 0.0, 0.2, 0.2]])
    crop = box_crop_mask(boxes, height=5, width=7, padding=padding)
    assert crop.shape == (3, 5, 7) and crop.dtype == torch.bool
    for n, y, x in itertools.product(range(3), range(5), range(7)):
        x0, x1 = sorted([boxes[n, 0].item(), boxes[n, 2].item()])  # an inverted box by its extent
        y0, y1 = sorted([boxes[n, 1].item(), boxes[n, 3].item()])
        inside = (x0 - padding <= x + 0.5 < x1 + padding) and (
            y0 - padding <= y + 0.5 < y1 + padding
        )
        assert crop[n, y, x].item() == inside, (n, y, x)


def reference_fast_nms(boxes, scores, iou_threshold, score_threshold, top_k, max_detections):
    """Fast NMS by its definition, one pair at a time."""

    def iou(a, b):
        w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
        return w * h / union

    kept = []
    for c in range(scores.shape[1]):
        ranked = sorted(range(len(boxes)), key=lambda i: -scores[i, c].item())[:top_k]
        for position, i in enumerate(ranked):
            better = ranked[:position]  # suppressed or not, every better box counts
            overlap = max((iou(boxes[j].tolist(), boxes[i].tolist()) for j in better), default=0)
            if overlap <= iou_threshold and scores[i, c] > score_threshold:
                kept.append((scores[i, c].item(), i, c))
    kept.sort(key=lambda t: -t[0])
    return kept[:max_detections]


@pytest.mark.parametrize("seed", range(4))
def test_fast_nms_follows_its_definition(seed):
    gen = torch.Generator().manual_seed(seed)
    xy = torch.rand(12, 2, generator=gen) * 20
    boxes = torch.cat([xy, xy + 5 + torch.rand(12, 2, generator=gen) * 10], dim=1)
    scores = torch.rand(12, 3, generator=gen)
    box_index, classes, kept = fast_nms(
        boxes, scores, iou_threshold=0.3, score_threshold=0.2, top_k=8, max_detections=10
    )
    expected = reference_fast_nms(boxes, scores, 0.3, 0.2, 8, 10)
    assert [(i, c) for _, i, c in expected] == list(zip(box_index.tolist(), classes.tolist()))
    assert kept.tolist() == pytest.approx([s for s, _, _ in expected])


def test_a_suppressed_box_still_suppresses_in_fast_nms():
    # b overlaps a (suppressed by it) and c; greedy NMS would keep c, Fast NMS does not.
    boxes = torch.tensor([[0.0, 0, 10, 10], [4, 0, 14, 10], [8, 0, 18, 10]])
    scores = torch.tensor([[0.9], [0.8], [0.7]])
    box_index, classes, _ = fast_nms(
        boxes, scores, iou_threshold=0.3, score_threshold=0.05, top_k=200, max_detections=100
    )
    assert box_index.tolist() == [0] and classes.tolist() == [0]


def test_fast_nms_of_no_boxes_is_empty():
    box_index, classes, scores = fast_nms(
        torch.zeros(0, 4),
        torch.zeros(0, 3),
        iou_threshold=0.5,
        score_threshold=0.05,
        top_k=200,
        max_detections=100,
    )
    assert box_index.numel() == classes.numel() == scores.numel() == 0
