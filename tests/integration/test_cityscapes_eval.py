"""Cityscapes box evaluation on a synthetic Cityscapes folder (the real file layout and polygon
json): detectron2's loader, then corrloss_d2's evaluator choice (COCO-style box AP)."""
import json
import os

import pytest
from PIL import Image

import corrloss_d2  # noqa: F401
from corrloss_d2.evaluation import build_box_evaluator
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets.builtin_meta import _get_builtin_metadata
from detectron2.data.datasets.cityscapes import load_cityscapes_instances
from detectron2.structures import BoxMode, Boxes, Instances

import torch

OBJECTS = [  # (label, polygon); "road" has no instances and must be skipped
    [("car", [[5, 5], [30, 5], [30, 20], [5, 20]]), ("person", [[40, 2], [50, 2], [50, 30], [40, 30]]),
     ("road", [[0, 25], [63, 25], [63, 31], [0, 31]])],
    [("bicycle", [[10, 10], [20, 10], [20, 25], [10, 25]]), ("car", [[30, 4], [60, 4], [60, 28], [30, 28]])],
]


def make_cityscapes(root):
    image_dir, gt_dir = root / "leftImg8bit" / "val" / "aachen", root / "gtFine" / "val" / "aachen"
    image_dir.mkdir(parents=True)
    gt_dir.mkdir(parents=True)
    for i, objects in enumerate(OBJECTS):
        base = f"aachen_{i:06d}_000019_"
        Image.new("RGB", (64, 32)).save(image_dir / f"{base}leftImg8bit.png")
        for suffix in ("instanceIds", "labelIds"):
            Image.new("L", (64, 32)).save(gt_dir / f"{base}gtFine_{suffix}.png")
        with open(gt_dir / f"{base}gtFine_polygons.json", "w") as f:
            json.dump({"imgHeight": 32, "imgWidth": 64,
                       "objects": [{"label": l, "polygon": p} for l, p in objects]}, f)
    return str(root / "leftImg8bit" / "val"), str(root / "gtFine" / "val")


def test_cityscapes_instances_get_coco_box_ap(tmp_path):
    image_dir, gt_dir = make_cityscapes(tmp_path / "cityscapes")
    name = "corrloss_test_cityscapes_val"
    DatasetCatalog.register(name, lambda: load_cityscapes_instances(image_dir, gt_dir))
    MetadataCatalog.get(name).set(evaluator_type="cityscapes_instance",
                                  **_get_builtin_metadata("cityscapes"))
    dicts = DatasetCatalog.get(name)
    assert sorted(len(d["annotations"]) for d in dicts) == [2, 2]  # "road" skipped

    cfg = get_cfg()
    cfg.OUTPUT_DIR = str(tmp_path / "out")
    evaluator = build_box_evaluator(cfg, name)
    evaluator.reset()
    for d in dicts:  # the ground truth fed back as predictions
        boxes = torch.tensor([BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS)
                              for a in d["annotations"]], dtype=torch.float32)
        instances = Instances((d["height"], d["width"]), pred_boxes=Boxes(boxes),
                              scores=torch.ones(len(boxes)),
                              pred_classes=torch.tensor([a["category_id"] for a in d["annotations"]]))
        evaluator.process([{"image_id": d["image_id"], "height": d["height"], "width": d["width"]}],
                          [{"instances": instances}])
    results = evaluator.evaluate()
    assert results["bbox"]["AP"] == pytest.approx(100.0)
    assert results["bbox"]["AP-car"] == pytest.approx(100.0)


def test_datasets_without_a_box_evaluator_are_named(tmp_path):
    MetadataCatalog.get("corrloss_test_sem_seg").set(evaluator_type="sem_seg")
    with pytest.raises(NotImplementedError, match="corrloss_test_sem_seg.*'sem_seg'"):
        build_box_evaluator(get_cfg(), "corrloss_test_sem_seg")
