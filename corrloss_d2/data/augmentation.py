"""Train-time augmentation choices (INPUT.TRAIN_AUGMENTATION), and the train and test mappers:
detectron2's DatasetMapper, whose unreadable images raise an error naming the file."""

from typing import List, Sequence

import numpy as np
from detectron2.data import DatasetMapper, detection_utils
from detectron2.data import transforms as T

from ..errors import ImageReadError

__all__ = [
    "CheckedDatasetMapper",
    "RandomChoiceOfAugmentations",
    "build_train_augmentation",
    "build_train_mapper",
    "build_test_mapper",
]

# YOLACT's photometric distortion as detectron2's multiplicative augmentations: brightness
# ±32 of 255 (about ±12.5% at mid-grey), contrast and saturation x0.5 to x1.5.
YOLACT_BRIGHTNESS = (0.875, 1.125)
YOLACT_CONTRAST = (0.5, 1.5)
YOLACT_SATURATION = (0.5, 1.5)
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
    INPUT.MIN_SIZE_TRAIN / MAX_SIZE_TRAIN and the flip of INPUT.RANDOM_FLIP. "yolact": YOLACT's
    photometric distortion (each with probability 0.5: brightness, contrast and saturation
    scaled by up to ±12.5%, ±50%, ±50%), a resize to a MIN_SIZE_TRAIN[0] square whatever the
    aspect ratio, and the flip (the test images get the same square resize)."""
    if cfg.INPUT.TRAIN_AUGMENTATION == "detectron2":
        return DatasetMapper.from_config(cfg, is_train=True)["augmentations"]
    resize, *flips = detection_utils.build_augmentation(cfg, is_train=True)
    if cfg.INPUT.TRAIN_AUGMENTATION == "yolact":
        side = cfg.INPUT.MIN_SIZE_TRAIN[0]
        photometric = [
            T.RandomApply(T.RandomBrightness(*YOLACT_BRIGHTNESS)),
            T.RandomApply(T.RandomContrast(*YOLACT_CONTRAST)),
            T.RandomApply(T.RandomSaturation(*YOLACT_SATURATION)),
        ]
        return [*photometric, T.Resize((side, side)), *flips]
    crop = [
        T.ResizeShortestEdge(CROP_PRE_RESIZE_SHORT_EDGES, sample_style="choice"),
        T.RandomCrop(cfg.INPUT.CROP.TYPE, cfg.INPUT.CROP.SIZE),
    ]
    return [RandomChoiceOfAugmentations([[resize], crop + [resize]]), *flips]


class CheckedDatasetMapper(DatasetMapper):
    """detectron2's DatasetMapper (same arguments); an image it cannot read (a missing file, a
    truncated or corrupt image) raises :class:`~corrloss_d2.errors.ImageReadError` naming the
    file and its dataset entry, where PIL's own error may not name the file."""

    def __call__(self, dataset_dict):
        try:
            return super().__call__(dataset_dict)
        except (OSError, SyntaxError) as error:  # what opening and decoding an image raise
            raise ImageReadError(
                f"cannot read image {dataset_dict.get('file_name')!r} (image_id "
                f"{dataset_dict.get('image_id')!r}): {type(error).__name__}: {error}. Replace it "
                "with a readable image, or remove the image and its annotations from the "
                "dataset's annotation file"
            ) from error


def build_train_mapper(cfg) -> CheckedDatasetMapper:
    """detectron2's train DatasetMapper with :func:`build_train_augmentation`, naming unreadable
    images (:class:`CheckedDatasetMapper`)."""
    return CheckedDatasetMapper(
        **{
            **DatasetMapper.from_config(cfg, is_train=True),
            "augmentations": build_train_augmentation(cfg),
        }
    )


def build_test_mapper(cfg) -> CheckedDatasetMapper:
    """detectron2's test DatasetMapper (``DatasetMapper(cfg, is_train=False)``; with
    INPUT.TRAIN_AUGMENTATION "yolact" a resize to a MIN_SIZE_TEST square instead), naming
    unreadable images (:class:`CheckedDatasetMapper`)."""
    arguments = DatasetMapper.from_config(cfg, is_train=False)
    if cfg.INPUT.TRAIN_AUGMENTATION == "yolact":
        arguments["augmentations"] = [T.Resize((cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MIN_SIZE_TEST))]
    return CheckedDatasetMapper(**arguments)
