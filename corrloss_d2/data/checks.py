"""Checks of the datasets a config names, made once before training or evaluation starts, and the
data loaders ``train_net.py`` builds with them. Use them from your own trainer too:

    class MyTrainer(DefaultTrainer):
        @classmethod
        def build_train_loader(cls, cfg):
            return build_checked_train_loader(cfg)

        @classmethod
        def build_test_loader(cls, cfg, dataset_name):
            return build_checked_test_loader(cfg, dataset_name)
"""

import os
from typing import Dict, List, Optional, Sequence

from detectron2.data import (
    DatasetCatalog,
    MetadataCatalog,
    build_detection_test_loader,
    build_detection_train_loader,
    get_detection_dataset_dicts,
)
from detectron2.data.build import filter_images_with_only_crowd_annotations
from detectron2.modeling import META_ARCH_REGISTRY, GeneralizedRCNN, RetinaNet
from detectron2.modeling.meta_arch.fcos import FCOS
from detectron2.structures import BoxMode

from ..errors import DatasetError
from .coco_json import check_coco_json, read_coco_json
from .datasets import COCO_DATASETS_ENV

__all__ = [
    "num_classes_key",
    "check_datasets",
    "build_checked_train_loader",
    "build_checked_test_loader",
]

# Annotation files checked for evaluation already: (path, modification time).
_EVALUATION_JSONS_CHECKED = set()


# detectron2's own meta-architectures, which cannot declare NUM_CLASSES_KEY themselves.
_DETECTRON2_NUM_CLASSES_KEYS = (
    (FCOS, "MODEL.FCOS.NUM_CLASSES"),
    (RetinaNet, "MODEL.RETINANET.NUM_CLASSES"),
    (GeneralizedRCNN, "MODEL.ROI_HEADS.NUM_CLASSES"),
)


def num_classes_key(meta_architecture: str) -> Optional[str]:
    """The config key that sets the number of classes of a registered meta-architecture: its
    class attribute ``NUM_CLASSES_KEY`` (every corrloss_d2 meta-architecture declares one), else
    the key of the detectron2 meta-architecture it derives from; None for the others."""
    try:
        arch = META_ARCH_REGISTRY.get(meta_architecture)
    except KeyError:
        return None
    if getattr(arch, "NUM_CLASSES_KEY", None):
        return arch.NUM_CLASSES_KEY
    for base, key in _DETECTRON2_NUM_CLASSES_KEYS:
        if isinstance(arch, type) and issubclass(arch, base):
            return key
    return None


def _config_value(cfg, key: str):
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


def _roles(cfg, name: str) -> str:
    return (
        " and ".join(
            key
            for key, names in (
                ("DATASETS.TRAIN", cfg.DATASETS.TRAIN),
                ("DATASETS.TEST", cfg.DATASETS.TEST),
            )
            if name in names
        )
        or "evaluation"
    )


def _thing_classes(name: str) -> Optional[List[str]]:
    metadata = MetadataCatalog.get(name)
    if metadata.get("thing_classes", None) is None:
        DatasetCatalog.get(name)  # loading a COCO-format dataset sets its thing_classes
    return metadata.get("thing_classes", None)


def _class_problem(cfg, name: str, key: Optional[str]) -> Optional[str]:
    if name not in DatasetCatalog.list():
        return (
            f"dataset {name!r} ({_roles(cfg, name)}) is not registered; register it first "
            "(detectron2.data.datasets.register_coco_instances, or "
            f"${COCO_DATASETS_ENV}=name=annotations.json:image_folder). Registered: "
            f"{', '.join(sorted(DatasetCatalog.list()))}"
        )
    classes = _thing_classes(name) if key else None
    num_classes = _config_value(cfg, key) if key else None
    if classes is None or len(classes) == num_classes:
        return None
    shown = ", ".join(classes[:5]) + (", ..." if len(classes) > 5 else "")
    return (
        f"dataset {name!r} ({_roles(cfg, name)}) has {len(classes)} classes ({shown}) but "
        f"{cfg.MODEL.META_ARCHITECTURE} has {key} = {num_classes}: set {key} {len(classes)} "
        f"(config file or command line), or use a dataset of {num_classes} class(es)"
    )


def _check_evaluation_fields(name: str, with_masks: bool) -> None:
    """COCO evaluation reads each annotation's area and iscrowd (and for mask AP its
    segmentation) from the dataset's json file."""
    metadata = MetadataCatalog.get(name)
    json_file = metadata.get("json_file", None) or ""
    if metadata.get("evaluator_type", None) != "coco" or not os.path.isfile(json_file):
        return
    stamp = (os.path.abspath(json_file), os.stat(json_file).st_mtime_ns, with_masks)
    if stamp not in _EVALUATION_JSONS_CHECKED:
        check_coco_json(
            read_coco_json(json_file), json_file, for_evaluation=True, with_masks=with_masks
        )
        _EVALUATION_JSONS_CHECKED.add(stamp)


def check_datasets(cfg, dataset_names: Optional[Sequence[str]] = None) -> None:
    """Checks each dataset (default: those of DATASETS.TRAIN and DATASETS.TEST) before any
    training or evaluation: it is registered, and its number of classes (``thing_classes``;
    a COCO-format dataset is loaded to learn them) equals the model's NUM_CLASSES key
    (:func:`num_classes_key`). The annotation file of a COCO-format dataset that is evaluated
    (DATASETS.TEST, or ``dataset_names``) must give ``area`` and ``iscrowd``, and
    ``segmentation`` for a mask model (MODEL.MASK_ON). Raises one
    DatasetError naming every dataset that does not fit, its class count, the key and the
    value to set."""
    names = [*cfg.DATASETS.TRAIN, *cfg.DATASETS.TEST] if dataset_names is None else dataset_names
    key = num_classes_key(cfg.MODEL.META_ARCHITECTURE)
    problems = [p for p in (_class_problem(cfg, name, key) for name in dict.fromkeys(names)) if p]
    if problems:
        raise DatasetError("; ".join(problems))
    evaluated = cfg.DATASETS.TEST if dataset_names is None else dataset_names
    for name in dict.fromkeys(evaluated):
        _check_evaluation_fields(name, with_masks=cfg.MODEL.MASK_ON)


def _images_to_train_on(dicts: List[Dict]) -> int:
    return sum(any(a.get("iscrowd", 0) == 0 for a in d.get("annotations", ())) for d in dicts)


def _raise_if_nothing_to_train_on(cfg) -> None:
    loaded = {name: DatasetCatalog.get(name) for name in cfg.DATASETS.TRAIN}
    empty = [name for name, dicts in loaded.items() if not dicts]
    if empty:
        raise DatasetError(
            f"DATASETS.TRAIN dataset(s) {', '.join(map(repr, empty))} have no "
            "image; check the annotation file or folder they are registered with"
        )
    filter_empty = cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS
    if filter_empty and not any(_images_to_train_on(dicts) for dicts in loaded.values()):
        found = ", ".join(
            f"{name!r}: {len(dicts)} images, none with a (non-crowd) box"
            for name, dicts in loaded.items()
        )
        raise DatasetError(
            f"DATASETS.TRAIN has no image to train on ({found}); training skips "
            "images without boxes (DATALOADER.FILTER_EMPTY_ANNOTATIONS True). Add "
            "the boxes to the annotation file, or train on another dataset"
        )


def without_small_boxes(dataset_dicts: List[Dict], min_side: float) -> List[Dict]:
    """The dataset dicts without the ground truths whose box is at most ``min_side`` pixels wide
    or tall (the released YOLACT's FilterAnnotations)."""
    kept = []
    for record in dataset_dicts:
        annotations = []
        for annotation in record.get("annotations", ()):
            box = BoxMode.convert(annotation["bbox"], annotation["bbox_mode"], BoxMode.XYXY_ABS)
            if min(box[2] - box[0], box[3] - box[1]) > min_side:
                annotations.append(annotation)
        kept.append({**record, "annotations": annotations})
    return kept


def build_checked_train_loader(cfg, mapper=None, **kwargs):
    """detectron2's ``build_detection_train_loader(cfg, mapper=mapper, **kwargs)`` after
    :func:`check_datasets` (DATASETS.TRAIN and DATASETS.TEST, so that a test set that does not
    fit fails before training); where no image is left to train on, a DatasetError says why.
    With INPUT.MIN_BOX_SIDE_TRAIN > 0 the small boxes are dropped first
    (:func:`without_small_boxes`), and with them the images left without a box when
    DATALOADER.FILTER_EMPTY_ANNOTATIONS."""
    check_datasets(cfg)
    if cfg.INPUT.MIN_BOX_SIDE_TRAIN > 0 and "dataset" not in kwargs:
        dicts = without_small_boxes(
            get_detection_dataset_dicts(cfg.DATASETS.TRAIN, filter_empty=False),
            cfg.INPUT.MIN_BOX_SIDE_TRAIN,
        )
        if cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS:
            dicts = filter_images_with_only_crowd_annotations(dicts)
        kwargs["dataset"] = dicts
    try:
        return build_detection_train_loader(cfg, mapper=mapper, **kwargs)
    except AssertionError:  # detectron2 asserts that datasets are not empty
        _raise_if_nothing_to_train_on(cfg)
        raise


def build_checked_test_loader(cfg, dataset_name: str, mapper=None):
    """detectron2's ``build_detection_test_loader(cfg, dataset_name, mapper=mapper)`` after
    :func:`check_datasets` of ``dataset_name``."""
    check_datasets(cfg, [dataset_name])
    return build_detection_test_loader(cfg, dataset_name, mapper=mapper)
