"""Evaluators for the datasets corrloss_d2 trains on, and the choice ``train_net.py`` makes."""
from typing import Optional

from detectron2.data import MetadataCatalog
from detectron2.evaluation import DatasetEvaluator

from ..data.cityscapes import CITYSCAPES_EVALUATOR_TYPE
from .box import build_box_evaluator
from .cityscapes import CityscapesInstanceLevelEvaluator, build_cityscapes_evaluator

__all__ = ["CityscapesInstanceLevelEvaluator", "build_box_evaluator", "build_cityscapes_evaluator",
           "build_evaluator"]


def build_evaluator(cfg, dataset_name: str, output_folder: Optional[str] = None) -> DatasetEvaluator:
    """What ``train_net.py``'s ``Trainer.build_evaluator`` returns for ``dataset_name``: box AP and
    the official instance-level evaluation for Cityscapes detection datasets, box AP otherwise."""
    if MetadataCatalog.get(dataset_name).get("evaluator_type", None) == CITYSCAPES_EVALUATOR_TYPE:
        return build_cityscapes_evaluator(cfg, dataset_name, output_folder)
    return build_box_evaluator(cfg, dataset_name, output_folder)
