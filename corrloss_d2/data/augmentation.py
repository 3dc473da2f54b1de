"""Train-time augmentation choices (INPUT.TRAIN_AUGMENTATION), and the train and test mappers:
detectron2's DatasetMapper, whose unreadable images raise an error naming the file."""

from typing import List, Sequence

import numpy as np
from detectron2.data import DatasetMapper, detection_utils
from detectron2.data import transforms as T
from detectron2.structures import BoxMode

from ..errors import ImageReadError
from .ssd_augmentation import BoxAwareAugmentations, Expand, PhotometricDistortion

__all__ = [
    "CheckedDatasetMapper",
    "RandomChoiceOfAugmentations",
    "build_train_augmentation",
    "build_train_mapper",
    "build_test_mapper",
]

# YOLACT's released zoom-out and crop (mmdetection's Expand and MinIoURandomCrop).
YOLACT_EXPAND_RATIOS = (1.0, 4.0)
YOLACT_CROP_MIN_IOUS = (0.1, 0.3, 0.5, 0.7, 0.9)
YOLACT_CROP_MIN_SIZE = 0.3
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
    released pipeline — photometric distortion, with probability 0.5 a zoom-out onto a canvas
    1-4 times the size filled with MODEL.PIXEL_MEAN, a crop whose IoU with every box is at least
    one of 0.1-0.9 (or none), a resize to a MIN_SIZE_TRAIN[0] square whatever the aspect ratio,
    and the flip (the test images get the same square resize)."""
    if cfg.INPUT.TRAIN_AUGMENTATION == "detectron2":
        return DatasetMapper.from_config(cfg, is_train=True)["augmentations"]
    resize, *flips = detection_utils.build_augmentation(cfg, is_train=True)
    if cfg.INPUT.TRAIN_AUGMENTATION == "yolact":
        side = cfg.INPUT.MIN_SIZE_TRAIN[0]
        zoom_out_and_crop = BoxAwareAugmentations(
            [
                Expand(cfg.MODEL.PIXEL_MEAN, YOLACT_EXPAND_RATIOS),
                T.MinIoURandomCrop(YOLACT_CROP_MIN_IOUS, YOLACT_CROP_MIN_SIZE),
            ]
        )
        return [PhotometricDistortion(), zoom_out_and_crop, T.Resize((side, side)), *flips]
    crop = [
        T.ResizeShortestEdge(CROP_PRE_RESIZE_SHORT_EDGES, sample_style="choice"),
        T.RandomCrop(cfg.INPUT.CROP.TYPE, cfg.INPUT.CROP.SIZE),
    ]
    return [RandomChoiceOfAugmentations([[resize], crop + [resize]]), *flips]


class CheckedDatasetMapper(DatasetMapper):
    """detectron2's DatasetMapper (same arguments); an image it cannot read (a missing file, a
    truncated or corrupt image) raises :class:`~corrloss_d2.errors.ImageReadError` naming the
    file and its dataset entry, where PIL's own error may not name the file. In training,
    :class:`BoxAwareAugmentations` get the image's (non-crowd) boxes."""

    def __call__(self, dataset_dict):
        if self.is_train:
            self._boxes_for_augmentations(dataset_dict.get("annotations", ()))
        try:
            return super().__call__(dataset_dict)
        except (OSError, SyntaxError) as error:  # what opening and decoding an image raise
            raise ImageReadError(
                f"cannot read image {dataset_dict.get('file_name')!r} (image_id "
                f"{dataset_dict.get('image_id')!r}): {type(error).__name__}: {error}. Replace it "
                "with a readable image, or remove the image and its annotations from the "
                "dataset's annotation file"
            ) from error

    def _boxes_for_augmentations(self, annotations) -> None:
        box_aware = [a for a in self.augmentations.augs if isinstance(a, BoxAwareAugmentations)]
        if not box_aware:  # the common case: no per-sample work
            return
        boxes = [
            BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS)
            for a in annotations
            if not a.get("iscrowd", 0)
        ]
        for augmentation in box_aware:
            augmentation.boxes = np.array(boxes, dtype=np.float32).reshape(-1, 4)


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
