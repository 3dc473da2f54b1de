"""COCO-format datasets this package registers with detectron2 (names usable in DATASETS.*)."""
import os
from pathlib import Path
from typing import Optional

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json

__all__ = ["DATA_ROOT_ENV", "DATASET_FILES", "data_root", "register_corrloss_datasets"]

DATA_ROOT_ENV = "CORRLOSS_DATA_ROOT"

# name -> (annotation json, image folder), relative to the data root.
DATASET_FILES = {
    "raccoon_train": ("raccoon/annotations/train.json", "raccoon/images"),
    "raccoon_val": ("raccoon/annotations/val.json", "raccoon/images"),
    "coco128_train": ("coco128/annotations/instances_train2017.json", "coco128/train2017"),
}


def data_root() -> Path:
    """$CORRLOSS_DATA_ROOT, else ./datasets, else the checkout's sibling shared/data."""
    if os.environ.get(DATA_ROOT_ENV):
        return Path(os.environ[DATA_ROOT_ENV])
    candidates = [Path("datasets"), Path(__file__).resolve().parents[3] / "shared" / "data"]
    return next((c for c in candidates if c.is_dir()), candidates[0])


def _loader(name: str, root: Path, json_file: Path, image_root: Path):
    def load():
        for path in (json_file, image_root):
            if not path.exists():
                raise FileNotFoundError(
                    f"dataset {name!r} needs {path}, which does not exist. Set {DATA_ROOT_ENV} to "
                    f"the folder that holds {json_file.relative_to(root).parts[0]}/ (now {root}).")
        return load_coco_json(str(json_file), str(image_root), name)
    return load


def register_corrloss_datasets(root: Optional[Path] = None) -> None:
    """Registers the datasets of :data:`DATASET_FILES` under ``root`` (default :func:`data_root`).
    Loading is lazy: a missing file is reported when the dataset is first used. Idempotent."""
    root = Path(root) if root is not None else data_root()
    for name, (json_rel, images_rel) in DATASET_FILES.items():
        if name in DatasetCatalog.list():
            continue
        json_file, image_root = root / json_rel, root / images_rel
        DatasetCatalog.register(name, _loader(name, root, json_file, image_root))
        MetadataCatalog.get(name).set(json_file=str(json_file), image_root=str(image_root),
                                      evaluator_type="coco")
