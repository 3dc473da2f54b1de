"""CorrATSS: the ATSS assignment against a slow reference written here (loops, numpy), the losses
of a small fixed case against a hand-written reference, and the inference score."""

import math

import numpy as np
import pytest
import torch
from detectron2.utils.events import EventStorage

from corrloss_d2.modeling import atss_assignment
from corrloss_d2.modeling.meta_arch import atss as atss_module
from tests.references import reference_giou, reference_iou
from tests.tiny import synthetic_batch, tiny_model


def center(box):
    return ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)


def reference_atss(anchors, num_anchors_per_level, gt_boxes, topk):
    """ATSS as the paper states it, one ground truth and one anchor at a time."""
    anchors, gt_boxes = np.asarray(anchors, np.float64), np.asarray(gt_boxes, np.float64)
    best = [(-math.inf, -1)] * len(anchors)
    for g, gt in enumerate(gt_boxes):
        gx, gy = center(gt)
        candidates, start = [], 0
        for count in num_anchors_per_level:
            by_distance = sorted(
                (math.hypot(center(anchors[a])[0] - gx, center(anchors[a])[1] - gy), a)
                for a in range(start, start + count)
            )  # ties: the lower index first
            candidates += [a for _, a in by_distance[:topk]]
            start += count
        ious = np.array([reference_iou(anchors[a], gt) for a in candidates])
        threshold = ious.mean() + (ious.std(ddof=1) if len(ious) > 1 else 0.0)
        for a, iou in zip(candidates, ious):
            cx, cy = center(anchors[a])
            inside = min(cx - gt[0], cy - gt[1], gt[2] - cx, gt[3] - cy) > 0.01
            if iou >= threshold and inside and iou > best[a][0]:  # equal IoU: lower index kept
                best[a] = (iou, g)
    return [g for _, g in best]


def level_anchors(stride, height, width, scale=8, offset=0.0):
    """Square anchors of side scale·stride centred at ((x + offset)·stride, (y + offset)·stride),
    row-major (x fastest), as the detector's anchor generator lays them out."""
    half = scale * stride / 2
    return [
        [cx - half, cy - half, cx + half, cy + half]
        for y in range(height)
        for x in range(width)
        for cx, cy in [((x + offset) * stride, (y + offset) * stride)]
    ]


def random_scene(seed):
    rng = np.random.default_rng(seed)
    levels = [(8, 12, 10), (16, 6, 5), (32, 3, 3), (64, 1, 2)]  # (stride, height, width)
    anchors, counts = [], []
    for stride, height, width in levels:
        level = level_anchors(stride, height, width)
        anchors += level
        counts.append(len(level))
    boxes = []
    for _ in range(int(rng.integers(1, 7))):
        x, y = rng.uniform(-20, 90, size=2)
        w, h = rng.uniform(4, 70, size=2)
        boxes.append([x, y, x + w, y + h])
    boxes.append([300.0, 300.0, 340.0, 330.0])  # far outside every anchor
    return np.array(anchors), counts, np.array(boxes)


@pytest.mark.parametrize("seed", range(8))
def test_assignment_equals_the_reference_on_random_scenes(seed):
    anchors, counts, boxes = random_scene(seed)
    for topk in (1, 4, 9):
        ours = atss_assignment(torch.tensor(anchors), counts, torch.tensor(boxes), topk=topk)
        assert ours.dtype == torch.int64 and ours.shape == (len(anchors),)
        assert ours.tolist() == reference_atss(anchors, counts, boxes, topk)
    assert (ours >= 0).any(), "the scene must have positives"
    assert (ours != len(boxes) - 1).all(), "the box outside every anchor gets none"


def test_assignment_without_ground_truth_and_float32_input():
    anchors, counts, boxes = random_scene(0)
    empty = atss_assignment(torch.tensor(anchors), counts, torch.zeros(0, 4))
    assert empty.tolist() == [-1] * len(anchors)
    as_float32 = atss_assignment(
        torch.tensor(anchors, dtype=torch.float32), counts, torch.tensor(boxes).float()
    )
    assert as_float32.tolist() == reference_atss(np.float32(anchors), counts, np.float32(boxes), 9)


def test_hand_cases():
    # One level of four anchors 10 px apart; the box centred between the middle two.
    anchors = torch.tensor([[x - 5.0, 0.0, x + 5.0, 10.0] for x in (5, 15, 25, 35)])
    box = torch.tensor([[10.0, 0.0, 30.0, 10.0]])
    # top 2 by distance: anchors 1 and 2 (IoU 1/2 each: mean 1/2, std 0): both positive.
    assert atss_assignment(anchors, [4], box, topk=2).tolist() == [-1, 0, 0, -1]
    # top 3 adds anchor 0 (equally distant with 3; the lower index wins): IoUs 1/2, 1/2, 0 set
    # the threshold to 1/3 + 0.289, above both: no positive.
    assert atss_assignment(anchors, [4], box, topk=3).tolist() == [-1, -1, -1, -1]
    # Two identical boxes: every positive goes to the lower index.
    assert atss_assignment(anchors, [4], box.repeat(2, 1), topk=2).tolist() == [-1, 0, 0, -1]
    # Anchor 1 is the nearest of both boxes and inside both: it goes to the one it overlaps
    # most (IoU 0.8, not 0.5).
    boxes = torch.tensor([[6.0, 0.0, 26.0, 10.0], [12.0, 0.0, 20.0, 10.0]])
    assert atss_assignment(anchors, [4], boxes, topk=1).tolist() == [-1, 1, -1, -1]
    with pytest.raises(ValueError, match="sums to 3, but there are 4 anchors"):
        atss_assignment(anchors, [3], box)


def reference_losses(model, batch):
    """CorrATSS's losses written out: the head's raw outputs, anchors laid out by hand, the
    reference assignment, then focal / centerness-weighted GIoU / centerness BCE, each divided
    by its normaliser (positive count; sum of centerness targets for the box term)."""
    images = model.preprocess_image(batch)
    features = model.backbone(images.tensor)
    features = [features[name] for name in model.head_in_features]
    logits, deltas, centerness = model.head(features)
    strides = [model.backbone.output_shape()[name].stride for name in model.head_in_features]
    anchors = torch.tensor(
        [
            box
            for stride, f in zip(strides, features)
            for box in level_anchors(stride, f.shape[2], f.shape[3])
        ]
    )
    counts = [f.shape[2] * f.shape[3] for f in features]

    def flat(per_level, image):  # (R, C) in anchor order
        return torch.cat([x[image].permute(1, 2, 0).reshape(-1, x.shape[1]) for x in per_level])

    cls_sum, box_sum, ctr_sum, weight_sum, num_pos = 0.0, 0.0, 0.0, 0.0, 0
    for image, inputs in enumerate(batch):
        gt = inputs["instances"]
        assigned = torch.tensor(
            reference_atss(anchors.numpy(), counts, gt.gt_boxes.tensor.numpy(), 9)
            if len(gt)
            else [-1] * len(anchors)
        )
        positive = assigned >= 0
        num_pos += int(positive.sum())
        target = torch.zeros(len(anchors), model.num_classes)
        target[positive, gt.gt_classes[assigned[positive]]] = 1.0
        p = flat(logits, image).sigmoid()
        cls_sum += (
            -0.25 * target * (1 - p) ** 2 * torch.log(p)
            - 0.75 * (1 - target) * p**2 * torch.log(1 - p)
        ).sum()
        if not positive.any():
            continue
        a = anchors[positive]
        t = gt.gt_boxes.tensor[assigned[positive]]
        d = flat(deltas, image)[positive]
        wa, ha = a[:, 2] - a[:, 0], a[:, 3] - a[:, 1]
        xa, ya = a[:, 0] + wa / 2, a[:, 1] + ha / 2
        clamp = math.log(1000.0 / 16)
        x, y = xa + d[:, 0] / 10 * wa, ya + d[:, 1] / 10 * ha
        w, h = (
            wa * torch.exp((d[:, 2] / 5).clamp(max=clamp)),
            ha * torch.exp((d[:, 3] / 5).clamp(max=clamp)),
        )
        pred = torch.stack([x - w / 2, y - h / 2, x + w / 2, y + h / 2], dim=1)
        giou = torch.tensor([reference_giou(p, g) for p, g in zip(pred.tolist(), t.tolist())])
        l_, t_ = xa - t[:, 0], ya - t[:, 1]
        r_, b_ = t[:, 2] - xa, t[:, 3] - ya
        ctr_target = torch.sqrt(
            torch.minimum(l_, r_)
            / torch.maximum(l_, r_)
            * torch.minimum(t_, b_)
            / torch.maximum(t_, b_)
        )
        box_sum += (ctr_target * (1 - giou)).sum()
        weight_sum += float(ctr_target.sum())
        q = flat(centerness, image)[positive, 0].sigmoid()
        ctr_sum += -(ctr_target * torch.log(q) + (1 - ctr_target) * torch.log(1 - q)).sum()
    normalizer = max(num_pos, 1)
    losses = {
        "loss_atss_cls": cls_sum / normalizer,
        "loss_atss_box": 2.0 * box_sum / max(weight_sum, 1.0),
        "loss_atss_ctr": ctr_sum / normalizer,
    }
    return losses, num_pos


def test_losses_with_weight_0_equal_the_written_out_reference():
    model = tiny_model("CorrATSS", "MODEL.CORR_LOSS.WEIGHT", 0.0, seed=1)
    model.train()
    batch = synthetic_batch(3, empty=(2,), seed=5)
    with EventStorage():
        ours = model(batch)
    expected, num_pos = reference_losses(model, batch)
    assert num_pos > 0 and set(ours) == set(expected)
    for key, value in expected.items():
        torch.testing.assert_close(ours[key], value, rtol=1e-5, atol=1e-6, msg=key)
    # The normaliser is the batch's positive count itself, not an EMA.
    assert model.loss_normalizer.item() == num_pos

    with_corr = tiny_model("CorrATSS", "MODEL.CORR_LOSS.WEIGHT", 0.2, seed=1)
    with_corr.train()
    with EventStorage():
        losses = with_corr(batch)
    assert torch.isfinite(losses["loss_corr"]) and losses["loss_corr"] > 0
    for key in expected:  # the term adds to the detector's losses, which stay as they were
        torch.testing.assert_close(losses[key], ours[key])


def test_centerness_weight_0_leaves_the_branch_untrained():
    model = tiny_model("CorrATSS", "MODEL.ATSS.CENTERNESS_LOSS_WEIGHT", 0.0)
    model.train()
    with EventStorage():
        losses = model(synthetic_batch(2))
        assert losses["loss_atss_ctr"] == 0
        sum(losses.values()).backward()
    # The branch still takes part (DDP finds a gradient for it), a zero one.
    assert torch.count_nonzero(model.head.ctrness.weight.grad) == 0


def test_inference_scores_are_class_probability_times_centerness(monkeypatch):
    model = tiny_model("CorrATSS", "MODEL.ATSS.SCORE_THRESH_TEST", 0.0).eval()
    batch = synthetic_batch(2)
    seen = []
    original = atss_module.CorrATSS.inference_single_image

    def spy(self, anchors, scores, deltas, image_size):
        seen.append([s.clone() for s in scores])
        return original(self, anchors, scores, deltas, image_size)

    monkeypatch.setattr(atss_module.CorrATSS, "inference_single_image", spy)
    with torch.no_grad():
        outputs = model(batch)
        images = model.preprocess_image(batch)
        features = model.backbone(images.tensor)
        logits, _, centerness = model.head([features[f] for f in model.head_in_features])
    assert len(seen) == 2
    for image, per_level in enumerate(seen):
        for level, scores in enumerate(per_level):
            expected = logits[level][image].sigmoid() * centerness[level][image].sigmoid()
            torch.testing.assert_close(scores, expected.permute(1, 2, 0).reshape(scores.shape))
    assert all(len(output["instances"]) > 0 for output in outputs)
