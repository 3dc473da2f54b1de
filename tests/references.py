"""Reference formulas written out from their definitions, in plain Python, for the tests."""

import itertools
import math

import numpy as np

FOCAL_ALPHA, FOCAL_GAMMA = 0.25, 2.0


def reference_giou(a, b):
    """GIoU of two XYXY boxes given as lists."""

    def area(r):
        return (r[2] - r[0]) * (r[3] - r[1])

    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = area(a) + area(b) - inter
    hull = (max(a[2], b[2]) - min(a[0], b[0])) * (max(a[3], b[3]) - min(a[1], b[1]))
    return inter / union - (hull - union) / hull


def reference_iou(a, b):
    """IoU of two XYXY boxes given as sequences (an empty box has IoU 0)."""
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    intersection = width * height
    union = (
        max(0.0, a[2] - a[0]) * max(0.0, a[3] - a[1])
        + max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])
        - intersection
    )
    return intersection / union if union > 0 else 0.0


def reference_concordance(s, u) -> float:
    """Lin's concordance correlation coefficient of two sequences, in float64."""
    s, u = np.asarray(s, np.float64), np.asarray(u, np.float64)
    covariance = np.mean((s - s.mean()) * (u - u.mean()))
    return 2 * covariance / (s.var() + u.var() + (s.mean() - u.mean()) ** 2)


def _sigmoid(x):
    return 1 / (1 + math.exp(-x))


def _normalized(box, whwh, box_format):
    corners = [v / s for v, s in zip(box, whwh)]
    if box_format == "xyxy":
        return corners
    x1, y1, x2, y2 = corners
    return [(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1]


def _l1(box, gt_box, whwh, box_format):
    return sum(
        abs(a - b)
        for a, b in zip(_normalized(box, whwh, box_format), _normalized(gt_box, whwh, box_format))
    )


def reference_set_losses(
    logits,
    boxes,
    gt_classes,
    gt_boxes,
    whwh,
    *,
    loss_weights,
    cost_weights=None,
    box_format="xyxy",
    matches=None,
    normalizer=None,
):
    """A query detector's set losses written out, for a batch whose image 0 holds every ground
    truth: the optimal one-to-one matching by brute force (cost ``cls·focal + bbox·L1 −
    giou·GIoU``), unless ``matches`` gives the (query, ground truth) pairs (denoising); focal over
    every entry of every image, L1 (of boxes over the image size, as corners or centre and size)
    and 1 − GIoU over the matched pairs; all divided by ``normalizer`` (default: the number of
    ground truths).

    Args:
        logits: per image, per query, per class (nested lists); boxes: per image, per query,
            XYXY. gt_classes, gt_boxes: image 0's. whwh: image 0's (w, h, w, h).
        loss_weights, cost_weights: {"cls", "bbox", "giou"} weights.
    Returns:
        ({"cls", "bbox", "giou"}: weighted losses, the (query, ground truth) pairs).
    """

    def focal(p, positive):
        p_t, a_t = (p, FOCAL_ALPHA) if positive else (1 - p, 1 - FOCAL_ALPHA)
        return -a_t * (1 - p_t) ** FOCAL_GAMMA * math.log(p_t)

    def cost(q, g):
        p = _sigmoid(logits[0][q][gt_classes[g]])
        return (
            cost_weights["cls"] * (focal(p, True) - focal(p, False))
            + cost_weights["bbox"] * _l1(boxes[0][q], gt_boxes[g], whwh, box_format)
            - cost_weights["giou"] * reference_giou(boxes[0][q], gt_boxes[g])
        )

    if matches is None:
        best = min(
            itertools.permutations(range(len(logits[0])), len(gt_classes)),
            key=lambda chosen: sum(cost(q, g) for g, q in enumerate(chosen)),
        )
        matches = [(q, g) for g, q in enumerate(best)]
    normalizer = normalizer or len(gt_classes)
    positives = {(q, gt_classes[g]) for q, g in matches}
    class_loss = sum(
        focal(_sigmoid(x), image == 0 and (q, c) in positives)
        for image, rows in enumerate(logits)
        for q, row in enumerate(rows)
        for c, x in enumerate(row)
    )
    l1 = sum(_l1(boxes[0][q], gt_boxes[g], whwh, box_format) for q, g in matches)
    giou = sum(1 - reference_giou(boxes[0][q], gt_boxes[g]) for q, g in matches)
    unweighted = {"cls": class_loss, "bbox": l1, "giou": giou}
    return {n: loss_weights[n] * v / normalizer for n, v in unweighted.items()}, matches
