"""COCO box AP from a list of detections, computed fast enough to be run several times.

detectron2's compiled evaluation (``COCOeval_opt``) where its ops exist, otherwise the maintained
``faster-coco-eval`` package (C++ matching and accumulation; same AP as pycocotools, tested).
Plain pycocotools takes several times longer (docs/evaluation.md).
"""

import contextlib
import io
import math
from typing import Dict, List

from ..compiled_ops import has_compiled_ops

__all__ = ["coco_backend_name", "load_coco", "coco_box_ap"]


def coco_backend_name() -> str:
    """ "detectron2" (compiled COCOeval_opt) or "faster_coco_eval"."""
    return "detectron2" if has_compiled_ops() else "faster_coco_eval"


def load_coco(json_file: str):
    """The ground truth as a COCO api object of the backend that :func:`coco_box_ap` uses."""
    with contextlib.redirect_stdout(io.StringIO()):
        if coco_backend_name() == "detectron2":
            from pycocotools.coco import COCO
        else:
            from faster_coco_eval import COCO
        return COCO(json_file)


def coco_box_ap(coco_gt, detections: List[Dict]) -> float:
    """COCO AP@[.50:.95] on detectron2's 0-100 scale.

    Args:
        coco_gt: from :func:`load_coco`.
        detections: COCO result dicts (``image_id``, ``category_id``, ``bbox`` XYWH, ``score``).
    Returns:
        0.0 when there are no detections; NaN when the ground truth has no boxes.
    """
    if not coco_gt.getAnnIds():
        return math.nan
    if not detections:
        return 0.0
    with contextlib.redirect_stdout(io.StringIO()):  # the backends print their progress
        if coco_backend_name() == "detectron2":
            from detectron2.evaluation.fast_eval_api import COCOeval_opt as COCOeval
        else:
            from faster_coco_eval import COCOeval_faster as COCOeval
        coco_eval = COCOeval(coco_gt, coco_gt.loadRes(detections), "bbox")
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return float(coco_eval.stats[0]) * 100
