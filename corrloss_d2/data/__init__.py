"""Datasets (registered in one place, :func:`register_corrloss_datasets`), their checks, the
train-time augmentation and mappers, and the resumable train loader."""

from .checks import build_checked_test_loader, build_checked_train_loader, check_datasets
from .cityscapes import (
    CITYSCAPES_DETECTION_SPLITS,
    register_cityscapes_detection,
    register_cityscapes_detection_splits,
)
from .coco_json import load_checked_coco_json
from .datasets import DATA_ROOT_ENV, data_root, register_corrloss_datasets
from .resumable import ResumableTrainLoader

__all__ = [
    "CITYSCAPES_DETECTION_SPLITS",
    "DATA_ROOT_ENV",
    "build_checked_test_loader",
    "build_checked_train_loader",
    "check_datasets",
    "data_root",
    "load_checked_coco_json",
    "register_cityscapes_detection",
    "register_cityscapes_detection_splits",
    "register_corrloss_datasets",
    "ResumableTrainLoader",
]
