"""Cityscapes instance datasets (boxes and masks), read with the official toolkit
(``cityscapesscripts``).

Layout, as downloaded from cityscapes-dataset.com (``gtFine_trainvaltest``,
``leftImg8bit_trainvaltest``)::

    <root>/leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    <root>/gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_polygons.json
    <root>/gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_instanceIds.png  (official evaluation)

Ground truth: the 8 classes the toolkit evaluates instances of (labels with ``hasInstances`` and
not ``ignoreInEval``). Each image's polygons are rendered by the toolkit's own
``createInstanceImage`` (what ``json2instanceImg`` writes to ``*_instanceIds.png``), so a box is
tight around the pixels the instance keeps after later polygons drew over it, in detectron2's
pixel-edge convention: a box covers every pixel of its instance, a one-pixel instance is 1 x 1.
Group regions (``cargroup``, ``persongroup``, ...) become ``iscrowd=1`` boxes of their class: COCO
evaluation ignores detections of that class inside them and training drops them, as the toolkit
ignores predictions of the class that fall on the group. caravan and trailer (``ignoreInEval``)
and every other label are left out.
"""

import glob
import logging
import os
from typing import List, Optional

import numpy as np
import pycocotools.mask as mask_util
from cityscapesscripts.helpers.annotation import Annotation
from cityscapesscripts.helpers.labels import labels
from cityscapesscripts.preparation.json2instanceImg import createInstanceImage
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode
from scipy import ndimage

__all__ = [
    "CITYSCAPES_DETECTION_SPLITS",
    "CITYSCAPES_EVALUATOR_TYPE",
    "CITYSCAPES_THING_CLASSES",
    "cityscapes_gt_file",
    "instance_annotations",
    "load_cityscapes_detection",
    "register_cityscapes_detection",
    "register_cityscapes_detection_splits",
]

logger = logging.getLogger(__name__)

# The toolkit's instance classes, in its label-id order: person, rider, car, truck, bus, train,
# motorcycle, bicycle. category_id k of a dataset dict is CITYSCAPES_THING_CLASSES[k].
_THING_LABELS = [label for label in labels if label.hasInstances and not label.ignoreInEval]
CITYSCAPES_THING_CLASSES = tuple(label.name for label in _THING_LABELS)
_CATEGORY_OF_LABEL_ID = {label.id: k for k, label in enumerate(_THING_LABELS)}

# Metadata evaluator_type of these datasets; corrloss_d2.evaluation.build_evaluator routes on it.
CITYSCAPES_EVALUATOR_TYPE = "cityscapes_detection"

# Dataset name -> split folder under <root>/leftImg8bit and <root>/gtFine.
CITYSCAPES_DETECTION_SPLITS = {
    "cityscapes_fine_detection_train": "train",
    "cityscapes_fine_detection_val": "val",
}

_IMAGE_SUFFIX = "_leftImg8bit.png"
# instanceIds values: label_id * 1000 + n for individual instances, label_id for group regions.
_INSTANCE_ID_OFFSET = 1000


def cityscapes_gt_file(gt_dir: str, image_file: str, suffix: str) -> str:
    """The ground-truth file of ``image_file`` (``<city>/<name>_leftImg8bit.png``) in ``gt_dir``:
    ``suffix="gtFine_instanceIds.png"`` gives ``<gt_dir>/<city>/<name>_gtFine_instanceIds.png``."""
    city = os.path.basename(os.path.dirname(image_file))
    name = os.path.basename(image_file)[: -len(_IMAGE_SUFFIX)]
    return os.path.join(gt_dir, city, f"{name}_{suffix}")


def instance_annotations(instance_ids: np.ndarray) -> List[dict]:
    """Box annotations of an instanceIds image.

    Args:
        instance_ids: (H, W) non-negative integer array in the toolkit's encoding (label id * 1000
            + n for an instance, the label id for a group region or a label without instances).

    Returns:
        one dict per instance or group region of the 8 classes, in increasing id order:
        ``bbox`` (x0, y0, x1, y1) tight around its pixels (x1 = last column + 1), ``bbox_mode``
        XYXY_ABS, ``category_id`` (index into CITYSCAPES_THING_CLASSES), ``iscrowd`` (1 for groups)
        and ``segmentation``, its pixels as COCO RLE (for mask models: INPUT.MASK_FORMAT
        "bitmask").
    """
    annotations = []
    # One pass over the pixels: slot v - 1 holds the bounding slices of value v, None if absent.
    for value, extent in enumerate(ndimage.find_objects(instance_ids), start=1):
        if extent is None:
            continue
        rows, cols = extent
        is_group = value < _INSTANCE_ID_OFFSET
        category = _CATEGORY_OF_LABEL_ID.get(value if is_group else value // _INSTANCE_ID_OFFSET)
        if category is None:
            continue
        mask = np.zeros(instance_ids.shape, dtype=np.uint8, order="F")
        mask[extent] = instance_ids[extent] == value
        annotations.append(
            {
                "bbox": [cols.start, rows.start, cols.stop, rows.stop],
                "bbox_mode": BoxMode.XYXY_ABS,
                "category_id": category,
                "iscrowd": int(is_group),
                "segmentation": mask_util.encode(mask),
            }
        )
    return annotations


def _read_polygons(json_file: str) -> Annotation:
    annotation = Annotation()
    try:
        annotation.fromJsonFile(json_file)
    except (ValueError, KeyError, TypeError, IndexError) as e:
        raise ValueError(
            f"{json_file} is not a Cityscapes polygon annotation (imgHeight, "
            "imgWidth, objects with label and polygon): "
            f"{type(e).__name__}: {e}"
        ) from e
    return annotation


def _render_instance_ids(annotation: Annotation, json_file: str) -> np.ndarray:
    try:
        return np.asarray(createInstanceImage(annotation, "ids"))
    except SystemExit:  # the toolkit prints the reason (e.g. an unknown label) and exits
        raise ValueError(
            f"the Cityscapes toolkit could not render {json_file}; its message is printed above"
        ) from None


def load_cityscapes_detection(image_dir: str, gt_dir: str) -> List[dict]:
    """Detectron2 dataset dicts of one Cityscapes split.

    Args:
        image_dir: ``<root>/leftImg8bit/<split>``, holding ``<city>/*_leftImg8bit.png``.
        gt_dir: ``<root>/gtFine/<split>``, holding ``<city>/*_gtFine_polygons.json``.

    Returns:
        one dict per image, sorted by file name: ``file_name``, ``image_id`` (its index),
        ``height``, ``width`` (from the json) and ``annotations`` (:func:`instance_annotations`).
    """
    pattern = os.path.join(image_dir, "*", "*" + _IMAGE_SUFFIX)
    image_files = sorted(glob.glob(pattern))
    if not image_files:
        raise FileNotFoundError(
            f"no Cityscapes images match {os.path.abspath(pattern)}. Expected "
            "leftImg8bit/<split>/<city>/*_leftImg8bit.png and "
            "gtFine/<split>/<city>/*_gtFine_polygons.json under the "
            "cityscapes folder of $DETECTRON2_DATASETS (default ./datasets)."
        )
    dataset_dicts = []
    for image_id, image_file in enumerate(image_files):
        json_file = cityscapes_gt_file(gt_dir, image_file, "gtFine_polygons.json")
        if not os.path.isfile(json_file):
            raise FileNotFoundError(
                f"{image_file} has no annotation: expected {json_file} "
                "(the gtFine package, beside leftImg8bit)."
            )
        annotation = _read_polygons(json_file)
        instance_ids = _render_instance_ids(annotation, json_file)
        dataset_dicts.append(
            {
                "file_name": image_file,
                "image_id": image_id,
                "height": annotation.imgHeight,
                "width": annotation.imgWidth,
                "annotations": instance_annotations(instance_ids),
            }
        )
    logger.info(f"Loaded {len(dataset_dicts)} Cityscapes images from {image_dir}")
    return dataset_dicts


def register_cityscapes_detection(name: str, image_dir: str, gt_dir: str) -> None:
    """Registers one split as dataset ``name``; loading (and checking the folders) is lazy.

    Metadata: ``thing_classes``, ``image_dir``, ``gt_dir`` (the official evaluation reads
    ``*_gtFine_instanceIds.png`` there) and ``evaluator_type`` = CITYSCAPES_EVALUATOR_TYPE.
    """
    image_dir, gt_dir = str(image_dir), str(gt_dir)
    DatasetCatalog.register(name, lambda: load_cityscapes_detection(image_dir, gt_dir))
    MetadataCatalog.get(name).set(
        thing_classes=list(CITYSCAPES_THING_CLASSES),
        image_dir=image_dir,
        gt_dir=gt_dir,
        evaluator_type=CITYSCAPES_EVALUATOR_TYPE,
    )


def register_cityscapes_detection_splits(root: Optional[str] = None) -> None:
    """Registers CITYSCAPES_DETECTION_SPLITS from ``<root>/cityscapes``; ``root`` defaults to
    ``$DETECTRON2_DATASETS`` (else ``./datasets``), as for detectron2's builtin datasets. Names
    already registered are kept (idempotent)."""
    if root is None:
        root = os.getenv("DETECTRON2_DATASETS", "datasets")
    cityscapes = os.path.join(os.path.expanduser(root), "cityscapes")
    for name, split in CITYSCAPES_DETECTION_SPLITS.items():
        if name not in DatasetCatalog.list():
            register_cityscapes_detection(
                name,
                os.path.join(cityscapes, "leftImg8bit", split),
                os.path.join(cityscapes, "gtFine", split),
            )
