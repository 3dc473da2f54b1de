"""The embedded "shapes" dataset (deterministic, cached) and COCO-json registration without code."""

import json
import os

import numpy as np
import pycocotools.mask as mask_util
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog

import corrloss_d2  # noqa: F401
from corrloss_d2.data import datasets, synthetic


def test_generation_is_deterministic_and_prefix_stable(tmp_path):
    first = json.load(open(synthetic.generate_split(tmp_path / "a", "val", 4, seed=7)))
    again = json.load(open(synthetic.generate_split(tmp_path / "b", "val", 4, seed=7)))
    prefix = json.load(open(synthetic.generate_split(tmp_path / "c", "val", 2, seed=7)))
    assert first == again
    for name in ("val_00000.jpg", "val_00003.jpg"):
        assert (tmp_path / "a/images/val" / name).read_bytes() == (
            tmp_path / "b/images/val" / name
        ).read_bytes()
    assert prefix["annotations"] == [a for a in first["annotations"] if a["image_id"] <= 2]
    other_seed = json.load(open(synthetic.generate_split(tmp_path / "d", "val", 4, seed=8)))
    assert other_seed["annotations"] != first["annotations"]

    size = synthetic.IMAGE_SIZE
    assert [c["name"] for c in first["categories"]] == list(synthetic.SHAPES_CLASSES)
    covered = {}  # image -> pixels some instance mask claims
    for ann in first["annotations"]:
        x, y, w, h = ann["bbox"]
        assert 0 <= x < x + w <= size and 0 <= y < y + h <= size and ann["area"] <= w * h
        assert ann["category_id"] in range(1, len(synthetic.SHAPES_CLASSES) + 1)
        # the exact visible pixels: the box is tight around them, their count is the area
        mask = mask_util.decode(ann["segmentation"]).astype(bool)
        ys, xs = np.nonzero(mask)
        assert mask.shape == (size, size) and mask.sum() == ann["area"]
        assert [xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()] == ann["bbox"]
        seen = covered.setdefault(ann["image_id"], np.zeros((size, size), bool))
        assert not (seen & mask).any(), "an occluded pixel belongs to the object in front only"
        seen |= mask


def test_dataset_is_generated_once_into_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(synthetic.CACHE_DIR_ENV, str(tmp_path))
    monkeypatch.setattr(synthetic, "SHAPES_SPLITS", {"train": (3, 1), "val": (2, 2)})
    paths = synthetic.ensure_shapes_dataset()
    folder = synthetic.shapes_folder()
    assert folder.parent == tmp_path and (folder / "COMPLETE").exists()
    assert len(json.load(open(paths["json:val"]))["images"]) == 2
    stamp = os.path.getmtime(paths["json:train"])
    assert synthetic.ensure_shapes_dataset() == paths
    assert os.path.getmtime(paths["json:train"]) == stamp
    assert [p.name for p in tmp_path.iterdir()] == [folder.name]  # no staging folder left


def test_shapes_datasets_are_registered_by_name():
    for name in ("shapes_train", "shapes_val"):
        assert name in DatasetCatalog.list()
        metadata = MetadataCatalog.get(name)
        assert metadata.evaluator_type == "coco"
        assert metadata.json_file.startswith(str(synthetic.shapes_folder()))


def test_coco_json_datasets_from_the_environment(tmp_path, monkeypatch):
    json_file = synthetic.generate_split(tmp_path, "val", 2, seed=3)
    parsed = datasets.parse_coco_dataset_list(f" mine_a={json_file}:{tmp_path}/images/val ; ")
    assert parsed == {"mine_a": (json_file, tmp_path / "images" / "val")}
    with pytest.raises(ValueError, match="name=annotations.json:image_folder"):
        datasets.parse_coco_dataset_list("only_a_name")

    monkeypatch.setenv(
        datasets.COCO_DATASETS_ENV,
        f"mine_env={json_file}:{tmp_path}/images/val;"
        f"mine_missing={tmp_path}/nothing.json:{tmp_path}",
    )
    datasets.register_corrloss_datasets()
    dicts = DatasetCatalog.get("mine_env")
    assert len(dicts) == 2 and MetadataCatalog.get("mine_env").thing_classes == list(
        synthetic.SHAPES_CLASSES
    )
    with pytest.raises(
        FileNotFoundError, match="nothing.json does not exist.*CORRLOSS_COCO_DATASETS"
    ):
        DatasetCatalog.get("mine_missing")
    monkeypatch.setenv(datasets.COCO_DATASETS_ENV, f"mine_env={tmp_path}/other.json:{tmp_path}")
    with pytest.raises(ValueError, match="'mine_env'.*already registered"):
        datasets.register_corrloss_datasets()
