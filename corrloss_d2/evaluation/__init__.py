"""Evaluators for the datasets corrloss_d2 trains on, and the choice ``train_net.py`` makes."""
from typing import Optional

from detectron2.evaluation import DatasetEvaluator

from .box import build_box_evaluator

__all__ = ["build_box_evaluator", "build_evaluator"]


def build_evaluator(cfg, dataset_name: str, output_folder: Optional[str] = None) -> DatasetEvaluator:
    """What ``train_net.py``'s ``Trainer.build_evaluator`` returns for ``dataset_name``."""
    return build_box_evaluator(cfg, dataset_name, output_folder)
