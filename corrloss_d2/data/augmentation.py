"""Train-time augmentation choices (INPUT.TRAIN_AUGMENTATION) and the train mapper built on them."""
from typing import List, Sequence

import numpy as np

from detectron2.data import DatasetMapper
from detectron2.data import detection_utils
from detectron2.data import transforms as T

__all__ = ["RandomChoiceOfAugmentations", "build_train_augmentation", "build_train_mapper"]

# Sparse R-CNN (after DETR) resizes to one of these shorter sides before its random crop.
CROP_PRE_RESIZE_SHORT_EDGES = (400, 500, 600)


class RandomChoiceOfAugmentations(T.Augmentation):
    """Applies one of several augmentation sequences, chosen uniformly per image."""

    def __init__(self, choices: Sequence[Sequence[T.Augmentation]]):
        super().__init__()
        if not choices:
            raise ValueError("RandomChoiceOfAugmentations needs at least one augmentation sequence")
        self.choices = [T.AugmentationList(list(c)) for c in choices]

    def __call__(self, aug_input) -> T.Transform:
        return self.choices[np.random.randint(len(self.choices))](aug_input)


def build_train_augmentation(cfg) -> List[T.Augmentation]:
    """INPUT.TRAIN_AUGMENTATION "detectron2": what ``DatasetMapper(cfg, is_train=True)`` applies
    (INPUT.CROP when enabled, multi-scale resize, flip). "sparse_rcnn": Sparse R-CNN's recipe —
    with probability 0.5 the image is first resized to a shorter side in 400/500/600 and cropped
    (INPUT.CROP.TYPE/SIZE; INPUT.CROP.ENABLED is not read), then always the multi-scale resize of
    INPUT.MIN_SIZE_TRAIN / MAX_SIZE_TRAIN and the flip of INPUT.RANDOM_FLIP."""
    if cfg.INPUT.TRAIN_AUGMENTATION == "detectron2":
        return DatasetMapper.from_config(cfg, is_train=True)["augmentations"]
    resize, *flips = detection_utils.build_augmentation(cfg, is_train=True)
    crop = [T.ResizeShortestEdge(CROP_PRE_RESIZE_SHORT_EDGES, sample_style="choice"),
            T.RandomCrop(cfg.INPUT.CROP.TYPE, cfg.INPUT.CROP.SIZE)]
    return [RandomChoiceOfAugmentations([[resize], crop + [resize]]), *flips]


def build_train_mapper(cfg) -> DatasetMapper:
    """detectron2's train DatasetMapper with :func:`build_train_augmentation`."""
    return DatasetMapper(**{**DatasetMapper.from_config(cfg, is_train=True),
                            "augmentations": build_train_augmentation(cfg)})
