"""Reference formulas written out from their definitions, in plain Python, for the tests."""

import numpy as np


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
