"""Evaluators for the datasets corrloss_d2 trains on, and the choice ``train_net.py`` makes."""

import os
from typing import Optional

from detectron2.data import MetadataCatalog
from detectron2.evaluation import DatasetEvaluator, DatasetEvaluators

from ..data.cityscapes import CITYSCAPES_EVALUATOR_TYPE
from .box import build_box_evaluator
from .cityscapes import CityscapesInstanceLevelEvaluator, build_cityscapes_evaluator
from .correlation import CorrelationEvaluator

__all__ = [
    "CityscapesInstanceLevelEvaluator",
    "CorrelationEvaluator",
    "build_box_evaluator",
    "build_cityscapes_evaluator",
    "build_evaluator",
]


def build_evaluator(
    cfg, dataset_name: str, output_folder: Optional[str] = None
) -> DatasetEvaluator:
    """What ``train_net.py``'s ``Trainer.build_evaluator`` returns for ``dataset_name``: box AP and
    the official instance-level evaluation for Cityscapes detection datasets, box AP otherwise;
    plus the correlation measures (:class:`CorrelationEvaluator`) unless
    ``TEST.CORRELATION_EVAL.ENABLED`` is False."""
    if MetadataCatalog.get(dataset_name).get("evaluator_type", None) == CITYSCAPES_EVALUATOR_TYPE:
        evaluator = build_cityscapes_evaluator(cfg, dataset_name, output_folder)
    else:
        evaluator = build_box_evaluator(cfg, dataset_name, output_folder)
    if not cfg.TEST.CORRELATION_EVAL.ENABLED:
        return evaluator
    correlation = CorrelationEvaluator(
        dataset_name,
        output_dir=output_folder or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name),
        iou_threshold=cfg.TEST.CORRELATION_EVAL.IOU_THRESHOLD,
        top_n=cfg.TEST.CORRELATION_EVAL.BR_RECALL_TOP_N,
    )
    return DatasetEvaluators([evaluator, correlation])
