"""YOLACT's losses against closed forms and explicit references."""

import math

import pytest
import torch
import torch.nn.functional as F

from corrloss_d2.losses import cropped_mask_loss, ohem_cross_entropy, semantic_segmentation_loss


def reference_ohem(logits, labels, background, ratio):
    losses = {
        i: F.cross_entropy(logits[i : i + 1], labels[i : i + 1]).item()
        for i, y in enumerate(labels.tolist())
        if y >= 0
    }
    positives = [loss for i, loss in losses.items() if labels[i] != background]
    negatives = sorted(
        (loss for i, loss in losses.items() if labels[i] == background), reverse=True
    )
    count = len(negatives) if not positives else min(int(ratio * len(positives)), len(negatives))
    return sum(positives) + sum(negatives[:count])


@pytest.mark.parametrize("labels", [[0, 3, 3, 1, 3, 3, 3, -1, 3, 2], [3, 3, -1, 3], [0, 1, 2, 3]])
def test_ohem_keeps_positives_and_the_three_times_as_many_hardest_negatives(labels):
    labels = torch.tensor(labels)
    logits = torch.randn(len(labels), 4, generator=torch.Generator().manual_seed(0))
    loss = ohem_cross_entropy(logits, labels, background=3, neg_pos_ratio=3)
    assert loss.item() == pytest.approx(reference_ohem(logits, labels, 3, 3), rel=1e-5)


def test_ohem_gradient_reaches_only_the_kept_anchors():
    labels = torch.tensor([0, 2, 2, 2, 2, 2])  # one positive: the 3 hardest of 5 negatives
    logits = torch.zeros(6, 3)
    logits[1:, 2] = torch.tensor([5.0, -1.0, 0.0, -2.0, 3.0])  # hardest: rows 4, 2, 3
    logits.requires_grad_(True)
    ohem_cross_entropy(logits, labels, background=2, neg_pos_ratio=3).backward()
    touched = logits.grad.abs().sum(dim=1) > 0
    assert touched.tolist() == [True, False, True, True, True, False]


def test_mask_loss_is_the_crop_sum_divided_by_the_box_area():
    # Logit 0 everywhere: ln 2 per pixel; the crop holds 12 pixels, the box covers 10.
    logits = torch.zeros(1, 6, 8)
    targets = torch.zeros(1, 6, 8)
    crop = torch.zeros(1, 6, 8, dtype=torch.bool)
    crop[0, 1:4, 2:6] = True
    loss = cropped_mask_loss(logits, targets, crop, torch.tensor([10.0]))
    assert loss.tolist() == pytest.approx([12 * math.log(2) / 10])


def test_mask_loss_of_a_scaled_copy_is_the_same():
    # Normalised by area: an object twice as large (4x the pixels) weighs the same.
    gen = torch.Generator().manual_seed(0)
    logits, targets = (
        torch.randn(1, 4, 4, generator=gen),
        (torch.rand(1, 4, 4, generator=gen) > 0.5),
    )
    crop = torch.ones(1, 4, 4, dtype=torch.bool)
    big = [
        x.repeat_interleave(2, dim=1).repeat_interleave(2, dim=2) for x in (logits, targets, crop)
    ]
    small_loss = cropped_mask_loss(logits, targets.float(), crop, torch.tensor([16.0]))
    big_loss = cropped_mask_loss(big[0], big[1].float(), big[2], torch.tensor([64.0]))
    assert big_loss.item() == pytest.approx(small_loss.item(), rel=1e-6)


def test_mask_loss_outside_the_crop_has_no_gradient():
    logits = torch.randn(2, 5, 5, requires_grad=True)
    crop = torch.zeros(2, 5, 5, dtype=torch.bool)
    crop[:, 1:3, 1:3] = True
    cropped_mask_loss(logits, torch.ones(2, 5, 5), crop, torch.tensor([4.0, 4.0])).sum().backward()
    assert torch.equal(logits.grad != 0, crop)


def test_mask_loss_shapes_are_checked():
    with pytest.raises(ValueError, match=r"box_areas \(P,\)"):
        cropped_mask_loss(
            torch.zeros(2, 3, 3),
            torch.zeros(2, 3, 3),
            torch.ones(2, 3, 3, dtype=torch.bool),
            torch.ones(3),
        )


def test_semantic_loss_is_the_summed_bce_over_images_and_pixels():
    logits = torch.zeros(2, 3, 4, 5)  # ln 2 per element: 3 classes summed per pixel
    targets = torch.zeros(2, 3, 4, 5)
    assert semantic_segmentation_loss(logits, targets).item() == pytest.approx(3 * math.log(2))
