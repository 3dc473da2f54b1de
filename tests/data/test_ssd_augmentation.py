"""YOLACT's released training augmentation (photometric distortion, zoom-out, min-IoU crop,
square resize) and the small-box filter, through the train mapper."""

import colorsys

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data import transforms as T
from detectron2.structures import BoxMode
from PIL import Image

from corrloss_d2.config import validate_corrloss_config
from corrloss_d2.data import checks
from corrloss_d2.data.augmentation import build_test_mapper, build_train_mapper
from corrloss_d2.data.checks import without_small_boxes
from corrloss_d2.data.ssd_augmentation import Expand, PhotometricDistortion, _distort
from tests.tiny import tiny_cfg


def test_distortion_steps_against_their_definitions():
    image = np.random.default_rng(0).integers(0, 256, size=(4, 5, 3), dtype=np.uint8)
    unchanged = dict(brightness=0.0, contrast=1.0, contrast_first=True, saturation=1.0, hue=0.0)
    assert np.array_equal(_distort(image, **unchanged), image)
    shifted = _distort(image, **{**unchanged, "brightness": 20.0, "contrast": 0.5})
    assert np.array_equal(shifted, np.clip(np.round((image + 20.0) * 0.5), 0, 255))
    # saturation halved and hue turned by a sixth of the circle, pixel by pixel
    pixel = np.array([[[200, 80, 40]]], dtype=np.uint8)
    out = _distort(pixel, **{**unchanged, "saturation": 0.5, "hue": 256 / 6})
    h, s, v = colorsys.rgb_to_hsv(*(pixel[0, 0] / 255.0))
    expected = 255 * np.array(colorsys.hsv_to_rgb((h + 1 / 6) % 1, s / 2, v))
    assert np.abs(out[0, 0].astype(float) - expected).max() <= 4  # PIL's 8-bit HSV
    swapped = _distort(image, **{**unchanged, "channel_order": (2, 0, 1)})
    assert np.array_equal(swapped, image[..., [2, 0, 1]])


def test_expand_places_the_image_on_a_canvas_of_the_mean():
    image = np.full((10, 20, 3), 7, dtype=np.uint8)
    np.random.seed(0)
    transforms = [Expand((1.0, 2.0, 3.0), ratio_range=(2.0, 3.0), prob=1.0).get_transform(image)]
    for transform in transforms:
        out = transform.apply_image(image)
        assert 20 <= out.shape[0] <= 30 and 40 <= out.shape[1] <= 60
        left, top = transform.x0, transform.y0
        assert (out[top : top + 10, left : left + 20] == 7).all()
        border = np.ones(out.shape[:2], bool)
        border[top : top + 10, left : left + 20] = False
        assert (out[border] == [1, 2, 3]).all()
        box = transform.apply_box(np.array([[0.0, 0.0, 20.0, 10.0]]))
        assert box.tolist() == [[left, top, left + 20, top + 10]]


def shapes_like_record(tmp_path):
    """A 160 x 160 image with two boxes and their exact masks, and one 3-pixel-wide box."""
    image = np.zeros((160, 160, 3), dtype=np.uint8)
    image[20:60, 30:90] = 200
    image[100:150, 100:120] = 90
    file_name = str(tmp_path / "image.png")
    Image.fromarray(image).save(file_name)
    annotations = []
    for x0, y0, x1, y1 in ((30, 20, 90, 60), (100, 100, 120, 150), (5, 5, 8, 40)):
        mask = np.zeros((160, 160), dtype=np.uint8, order="F")
        mask[y0:y1, x0:x1] = 1
        annotations.append(
            {
                "bbox": [x0, y0, x1, y1],
                "bbox_mode": BoxMode.XYXY_ABS,
                "category_id": 0,
                "segmentation": mask_util.encode(mask),
                "iscrowd": 0,
            }
        )
    return {"file_name": file_name, "height": 160, "width": 160, "annotations": annotations}


def test_yolact_mapper_keeps_boxes_masks_and_image_together(tmp_path):
    cfg = tiny_cfg(
        "CorrYOLACT",
        "INPUT.TRAIN_AUGMENTATION",
        "yolact",
        "INPUT.MASK_FORMAT",
        "bitmask",
        "INPUT.MIN_SIZE_TRAIN",
        (96,),
        "INPUT.MIN_SIZE_TEST",
        64,
    )
    cfg.MODEL.MASK_ON = True
    mapper = build_train_mapper(cfg)
    record = shapes_like_record(tmp_path)
    np.random.seed(0)
    sizes = set()
    for _ in range(20):
        mapped = mapper(record)
        assert mapped["image"].shape[1:] == (96, 96)  # a square whatever the crop
        instances = mapped["instances"]
        assert len(instances) <= 3
        masks = instances.gt_masks.tensor
        for box, mask in zip(instances.gt_boxes.tensor, masks):
            ys, xs = torch.nonzero(mask, as_tuple=True)
            assert len(ys)  # the mask moved with its box
            tight = torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]).float()
            assert torch.allclose(box, tight, atol=2.5), (box, tight)
        sizes.add(round(float(instances.gt_boxes.area().sum()), 1))
    assert len(sizes) > 5  # zoom-outs and crops change the boxes from draw to draw
    test_mapper = build_test_mapper(cfg)
    assert test_mapper(record)["image"].shape[1:] == (64, 64)


def test_boxes_at_most_min_box_side_are_dropped_with_the_images_left_empty(monkeypatch, tmp_path):
    record = shapes_like_record(tmp_path)  # boxes 60 x 40, 20 x 50 and 3 x 35
    tiny_only = {**record, "annotations": record["annotations"][2:]}
    kept = without_small_boxes([record, tiny_only], 3.0)
    assert [len(r["annotations"]) for r in kept] == [2, 0]
    assert [len(r["annotations"]) for r in without_small_boxes([record], 2.9)] == [3]
    # the train loader gets the filtered dicts, without the images left empty
    DatasetCatalog.register("corrloss_test_small_boxes", lambda: [record, tiny_only])
    MetadataCatalog.get("corrloss_test_small_boxes").thing_classes = ["a", "b", "c"]
    built = {}
    monkeypatch.setattr(checks, "build_detection_train_loader", lambda cfg, **kw: built.update(kw))
    try:
        cfg = tiny_cfg(
            "CorrYOLACT",
            "DATASETS.TRAIN",
            ("corrloss_test_small_boxes",),
            "DATASETS.TEST",
            (),
            "INPUT.MIN_BOX_SIDE_TRAIN",
            4.0,
        )
        checks.build_checked_train_loader(cfg, mapper=None)
    finally:
        DatasetCatalog.remove("corrloss_test_small_boxes")
        MetadataCatalog.remove("corrloss_test_small_boxes")
    assert [len(r["annotations"]) for r in built["dataset"]] == [2]


def test_min_box_side_is_checked():
    cfg = tiny_cfg("CorrYOLACT", "INPUT.MIN_BOX_SIDE_TRAIN", -1.0)
    with pytest.raises(ValueError, match=r"INPUT.MIN_BOX_SIDE_TRAIN = -1.0"):
        validate_corrloss_config(cfg)


def test_photometric_distortion_is_an_image_only_transform():
    image = np.random.default_rng(1).integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
    np.random.seed(3)
    transform = PhotometricDistortion().get_transform(image)
    assert isinstance(transform, T.ColorTransform)
    boxes = np.array([[1.0, 2.0, 5.0, 6.0]])
    assert np.array_equal(transform.apply_box(boxes), boxes)
    assert transform.apply_image(image).dtype == np.uint8
