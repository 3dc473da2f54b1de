"""The one loader of COCO-format annotation files that corrloss_d2's datasets use.

:func:`load_checked_coco_json` checks the json first (fields present, of the right type, ids that
refer to something) and raises one :class:`~corrloss_d2.errors.DatasetError` naming the file and
each bad entry and field, where detectron2's ``load_coco_json`` would fail with a ``KeyError`` or
let a box-less annotation through to fail later inside the data loader. Boxes with zero width or
height are dropped, with a logged count. The file is parsed twice (here and by pycocotools).
"""

import json
import logging
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from detectron2.data.datasets import load_coco_json

from ..config import is_number
from ..errors import DatasetError

__all__ = ["check_coco_json", "load_checked_coco_json", "read_coco_json"]

logger = logging.getLogger(__name__)

# Problems listed in one error message; the rest are counted.
MAX_LISTED_PROBLEMS = 5

# What each required field holds: the fix a message proposes.
FIELD_MEANINGS = {
    "id": "a unique id",
    "name": "the class name",
    "file_name": "the image's path relative to the image folder",
    "height": "the image height in pixels, a number > 0",
    "width": "the image width in pixels, a number > 0",
    "image_id": "the id of its image in 'images'",
    "category_id": "the id of its class in 'categories'",
    "bbox": "[x, y, width, height] in pixels",
    "iscrowd": "0, or 1 for a crowd region",
    "area": "the object's area in pixels, a number >= 0 (COCO evaluation reads it)",
    "segmentation": "the instance's mask, polygons [[x0, y0, x1, y1, ...], ...] or COCO RLE "
    "{'size': [height, width], 'counts': ...}, which mask models (MODEL.MASK_ON) are evaluated on",
}


class _Problems:
    """Collects what is wrong in one annotation file; lists the first few and counts all."""

    def __init__(self, json_file: Path):
        self.json_file = json_file
        self.listed: List[str] = []
        self.count = 0

    def add(self, where: str, text: str) -> None:
        self.count += 1
        if len(self.listed) < MAX_LISTED_PROBLEMS:
            self.listed.append(f"{where}: {text}")

    def field(self, where: str, entry: dict, key: str, ok) -> bool:
        """Records a problem unless ``entry[key]`` exists and ``ok(entry[key])``; returns True
        when the field is fine."""
        if key not in entry:
            self.add(where, f"no {key!r} (needs {FIELD_MEANINGS[key]})")
            return False
        if not ok(entry[key]):
            self.add(where, f"{key!r} = {entry[key]!r} is not {FIELD_MEANINGS[key]}")
            return False
        return True

    def raise_if_any(self) -> None:
        if not self.count:
            return
        unlisted = self.count - len(self.listed)
        more = f"\n  ... and {unlisted} more" if unlisted else ""
        raise DatasetError(
            f"{self.json_file} is not a valid COCO detection annotation file; fix these "
            f"{self.count} problem(s) in it:\n  "
            + "\n  ".join(self.listed)
            + more
            + "\n(each image needs id, file_name, height, width; each annotation id, image_id, "
            "category_id and bbox [x, y, width, height]; each category id and name)"
        )


def _named(kind: str, index: int, entry) -> str:
    label = f"{kind}[{index}]"
    if isinstance(entry, dict) and "id" in entry:
        label += f" (id {entry['id']!r}"
        label += f", file_name {entry['file_name']!r})" if "file_name" in entry else ")"
    return label


def _entries(problems: _Problems, data: dict, kind: str) -> List[Tuple[int, dict]]:
    """``(index, entry)`` for the objects of ``data[kind]``; records entries that are not."""
    entries = []
    for index, entry in enumerate(data.get(kind, [])):
        if isinstance(entry, dict):
            entries.append((index, entry))
        else:
            problems.add(f"{kind}[{index}]", f"is {entry!r}, not an object")
    return entries


def _is_id(value) -> bool:
    return isinstance(value, (int, str)) and not isinstance(value, bool)


def _unique_ids(problems: _Problems, kind: str, entries) -> set:
    ids = set()
    for index, entry in entries:
        if problems.field(_named(kind, index, entry), entry, "id", _is_id):
            if entry["id"] in ids:
                problems.add(_named(kind, index, entry), "the same id as an earlier entry")
            ids.add(entry["id"])
    return ids


def _is_segmentation(value) -> bool:
    if isinstance(value, dict):
        return "counts" in value and "size" in value
    return isinstance(value, list) and bool(value)


def check_coco_json(
    data, json_file: Path, for_evaluation: bool = False, with_masks: bool = False
) -> List:
    """Raises DatasetError listing what is wrong in the parsed COCO json ``data`` of
    ``json_file``: a missing or mistyped field, a duplicate id, an annotation whose image or
    category does not exist, a box that is not 4 finite numbers or has a negative size, no images.
    ``for_evaluation``: also require each annotation's ``area`` and ``iscrowd``, which COCO
    evaluation (pycocotools) reads; ``with_masks``: and its ``segmentation``. Returns the ids of
    the annotations whose box has zero width or height."""
    problems = _Problems(json_file)
    if not isinstance(data, dict):
        problems.add(
            "top level",
            f"is a {type(data).__name__}, not an object with 'images', "
            "'annotations' and 'categories'",
        )
        problems.raise_if_any()
    for kind in ("images", "categories", "annotations"):
        if kind not in data and kind != "annotations":  # no annotations: images without boxes
            problems.add("top level", f"no {kind!r} list")
        elif not isinstance(data.get(kind, []), list):
            problems.add("top level", f"{kind!r} is a {type(data[kind]).__name__}, not a list")
    problems.raise_if_any()

    categories = _entries(problems, data, "categories")
    category_ids = _unique_ids(problems, "categories", categories)
    for index, category in categories:
        problems.field(
            _named("categories", index, category),
            category,
            "name",
            lambda v: isinstance(v, str) and v != "",
        )
    images = _entries(problems, data, "images")
    image_ids = _unique_ids(problems, "images", images)
    for index, image in images:
        where = _named("images", index, image)
        problems.field(where, image, "file_name", lambda v: isinstance(v, str) and v != "")
        for key in ("height", "width"):
            problems.field(where, image, key, lambda v: is_number(v) and v > 0)
    if not images and not problems.count:
        problems.add(
            "images",
            "the list is empty, the dataset has no image; give the file that "
            "lists the dataset's images",
        )

    degenerate = []
    annotations = _entries(problems, data, "annotations")
    _unique_ids(problems, "annotations", annotations)
    for index, annotation in annotations:
        where = _named("annotations", index, annotation)
        problems.field(where, annotation, "image_id", lambda v: _is_id(v) and v in image_ids)
        problems.field(where, annotation, "category_id", lambda v: _is_id(v) and v in category_ids)
        for key, ok in (
            ("iscrowd", lambda v: v in (0, 1)),
            ("area", lambda v: is_number(v) and v >= 0),
        ):
            if key in annotation or for_evaluation:
                problems.field(where, annotation, key, ok)
        if with_masks:
            problems.field(where, annotation, "segmentation", _is_segmentation)
        if problems.field(
            where,
            annotation,
            "bbox",
            lambda v: isinstance(v, (list, tuple)) and len(v) == 4 and all(is_number(x) for x in v),
        ):
            width, height = annotation["bbox"][2:]
            if width < 0 or height < 0:
                problems.add(
                    where,
                    f"'bbox' = {annotation['bbox']!r} has a negative width or "
                    "height (COCO boxes are [x, y, width, height], not corners)",
                )
            elif width == 0 or height == 0:
                degenerate.append(annotation.get("id"))
    problems.raise_if_any()
    return degenerate


def read_coco_json(json_file: Path):
    """The parsed content of ``json_file``; DatasetError naming the file if it is not JSON."""
    try:
        with open(json_file, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as error:
        raise DatasetError(
            f"{json_file} is not valid JSON ({error}); fix or regenerate the annotation file"
        ) from error
    except UnicodeDecodeError as error:
        raise DatasetError(
            f"{json_file} is not a UTF-8 text file ({error}); give the COCO-format annotation json"
        ) from error


def _drop_degenerate_boxes(dicts: List[Dict], name: str, json_file: Path, ids: List) -> None:
    for record in dicts:
        record["annotations"] = [
            a for a in record.get("annotations", []) if a["bbox"][2] > 0 and a["bbox"][3] > 0
        ]
    shown = ", ".join(map(repr, ids[:MAX_LISTED_PROBLEMS]))
    logger.warning(
        "Dataset %r: ignoring %d box(es) with zero width or height in %s (annotation ids %s%s)",
        name,
        len(ids),
        json_file,
        shown,
        ", ..." if len(ids) > MAX_LISTED_PROBLEMS else "",
    )


def load_checked_coco_json(json_file, image_root, dataset_name: Optional[str] = None) -> List[Dict]:
    """detectron2's ``load_coco_json(json_file, image_root, dataset_name)`` (which also sets the
    dataset's ``thing_classes`` metadata) after :func:`check_coco_json`; annotations whose box
    has zero width or height are left out, with a warning giving their count and ids."""
    json_file = Path(json_file)
    degenerate = check_coco_json(read_coco_json(json_file), json_file)
    dicts = load_coco_json(str(json_file), str(image_root), dataset_name)
    if degenerate:
        _drop_degenerate_boxes(dicts, dataset_name or str(json_file), json_file, degenerate)
    return dicts
