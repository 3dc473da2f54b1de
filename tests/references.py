"""Reference formulas written out from their definitions, in plain Python, for the tests."""


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
