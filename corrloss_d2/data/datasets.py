"""COCO-format datasets this package registers with detectron2 (names usable in DATASETS.*).

Four kinds, all registered by :func:`register_corrloss_datasets` when ``corrloss_d2`` is imported
and loaded lazily:

- ``shapes_train``, ``shapes_val``: the embedded generated dataset (:mod:`.synthetic`), drawn and
  cached on first use; what the demo trains on. Needs nothing beside the checkout.
- ``raccoon_*``, ``coco128_train``: files under :func:`data_root` (:data:`DATASET_FILES`).
- any COCO-json dataset named in ``$CORRLOSS_COCO_DATASETS`` (:data:`COCO_DATASETS_ENV`), no code
  needed: ``name=annotations.json:image_folder``, several separated by ``;``.
- ``cityscapes_fine_detection_{train,val}`` (:mod:`.cityscapes`), read from
  ``$DETECTRON2_DATASETS/cityscapes``.

All are read by :func:`.coco_json.load_checked_coco_json`: a malformed annotation file raises an
error naming the file, entry and field; boxes with zero width or height are dropped (logged).
"""

import os
from pathlib import Path
from typing import Dict, Optional, Tuple

from detectron2.data import DatasetCatalog, MetadataCatalog

from ..errors import MissingFileError
from . import synthetic
from .cityscapes import register_cityscapes_detection_splits
from .coco_json import load_checked_coco_json

__all__ = [
    "DATA_ROOT_ENV",
    "COCO_DATASETS_ENV",
    "DATASET_FILES",
    "data_root",
    "parse_coco_dataset_list",
    "register_corrloss_datasets",
]

DATA_ROOT_ENV = "CORRLOSS_DATA_ROOT"
COCO_DATASETS_ENV = "CORRLOSS_COCO_DATASETS"

# name -> (annotation json, image folder), relative to the data root.
DATASET_FILES = {
    "raccoon_train": ("raccoon/annotations/train.json", "raccoon/images"),
    "raccoon_val": ("raccoon/annotations/val.json", "raccoon/images"),
    "coco128_train": ("coco128/annotations/instances_train2017.json", "coco128/train2017"),
}


def data_root() -> Path:
    """$CORRLOSS_DATA_ROOT, else ./datasets."""
    return Path(os.environ.get(DATA_ROOT_ENV) or "datasets")


def _coco_loader(name: str, json_file: Path, image_root: Path, missing_hint: str):
    """Loads a COCO-json dataset; a missing file or folder raises MissingFileError followed by
    ``missing_hint``: how to point the registration at it."""

    def load():
        for path in (json_file, image_root):
            if not path.exists():
                raise MissingFileError(f"{path} does not exist. {missing_hint}")
        return load_checked_coco_json(json_file, image_root, name)

    return load


def _loader(name: str, root: Path, json_file: Path, image_root: Path):
    """:func:`_coco_loader` of a dataset of :data:`DATASET_FILES` under the data root ``root``."""
    return _coco_loader(
        name,
        json_file,
        image_root,
        (
            f"Dataset {name!r} needs it: set {DATA_ROOT_ENV} to the folder that holds "
            f"{json_file.relative_to(root).parts[0]}/ (now {root}), or use the embedded datasets "
            "shapes_train / shapes_val, which need no files."
        ),
    )


def _shapes_loader(name: str, split: str):
    def load():
        synthetic.ensure_shapes_dataset()
        folder = synthetic.shapes_folder()
        return load_checked_coco_json(folder / f"{split}.json", folder / "images" / split, name)

    return load


def parse_coco_dataset_list(text: str) -> Dict[str, Tuple[Path, Path]]:
    """Parses ``"name=annotations.json:image_folder;name2=..."`` into ``{name: (json, folder)}``.
    Relative paths are taken from the current directory. Raises ValueError naming the bad entry."""
    datasets = {}
    for entry in filter(None, (e.strip() for e in text.split(";"))):
        name, _, paths = entry.partition("=")
        json_file, _, image_root = paths.rpartition(":")
        if not name.strip() or not json_file or not image_root:
            raise ValueError(
                f"${COCO_DATASETS_ENV} entry {entry!r} is not of the form "
                "name=annotations.json:image_folder (entries separated by ';')"
            )
        datasets[name.strip()] = (Path(json_file).resolve(), Path(image_root).resolve())
    return datasets


def _register(name: str, load, json_file: Path, image_root: Path) -> None:
    DatasetCatalog.register(name, load)
    MetadataCatalog.get(name).set(
        json_file=str(json_file), image_root=str(image_root), evaluator_type="coco"
    )


def register_corrloss_datasets(root: Optional[Path] = None) -> None:
    """Registers the embedded ``shapes_*`` datasets, those of :data:`DATASET_FILES` under ``root``
    (default :func:`data_root`), those listed in ``$CORRLOSS_COCO_DATASETS`` (which take
    precedence over :data:`DATASET_FILES`) and the Cityscapes detection splits. Loading is lazy:
    a missing file is reported when the dataset is first used. Idempotent; a name registered
    before with other data is an error."""
    root = Path(root) if root is not None else data_root()
    entries = {}
    for split in synthetic.SHAPES_SPLITS:
        folder = synthetic.shapes_folder()
        entries[f"shapes_{split}"] = (
            _shapes_loader(f"shapes_{split}", split),
            folder / f"{split}.json",
            folder / "images" / split,
        )
    for name, (json_rel, images_rel) in DATASET_FILES.items():
        json_file, image_root = root / json_rel, root / images_rel
        entries[name] = (_loader(name, root, json_file, image_root), json_file, image_root)
    for name, (json_file, image_root) in parse_coco_dataset_list(
        os.environ.get(COCO_DATASETS_ENV, "")
    ).items():
        hint = (
            f"Dataset {name!r} was registered from ${COCO_DATASETS_ENV} with it; fix that entry "
            f"(name=annotations.json:image_folder)."
        )
        entries[name] = (_coco_loader(name, json_file, image_root, hint), json_file, image_root)
    register_cityscapes_detection_splits()
    registered = set(DatasetCatalog.list())
    for name, (load, json_file, image_root) in entries.items():
        if name not in registered:
            _register(name, load, json_file, image_root)
        elif MetadataCatalog.get(name).get("json_file") != str(json_file):
            raise ValueError(
                f"${COCO_DATASETS_ENV} (or this package) registers {name!r} with "
                f"{json_file}, but that name is already registered with other data; "
                "choose another name"
            )
