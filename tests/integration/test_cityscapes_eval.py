"""Cityscapes detection datasets and their evaluation on a small Cityscapes folder built here: the
real layout, polygon json, and instance/label id images written by the toolkit's own
json2instanceImg/json2labelImg. Boxes against hand-made expectations, COCO box AP and the
official instance-level evaluation end to end, in one and in two processes."""

import glob
import json
import os

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from cityscapesscripts.evaluation import evalInstanceLevelSemanticLabeling as instance_level_eval
from cityscapesscripts.helpers.annotation import Annotation
from cityscapesscripts.helpers.labels import id2label
from cityscapesscripts.preparation.json2instanceImg import createInstanceImage
from cityscapesscripts.preparation.json2labelImg import json2labelImg
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, DatasetMapper, MetadataCatalog
from detectron2.data import transforms as T
from detectron2.evaluation import COCOEvaluator, DatasetEvaluators
from detectron2.structures import Boxes, Instances
from PIL import Image

import corrloss_d2  # noqa: F401  (registers the Cityscapes splits)
from corrloss_d2 import add_corrloss_config
from corrloss_d2.data import CITYSCAPES_DETECTION_SPLITS, register_cityscapes_detection
from corrloss_d2.data.augmentation import build_train_augmentation
from corrloss_d2.data.cityscapes import CITYSCAPES_THING_CLASSES, cityscapes_gt_file
from corrloss_d2.engine import launch_processes
from corrloss_d2.evaluation import (
    CityscapesInstanceLevelEvaluator,
    build_cityscapes_evaluator,
    build_evaluator,
)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WIDTH, HEIGHT = 128, 64


def rect(x0, y0, x1, y1):
    """Polygon of the rectangle whose pixels are columns x0..x1 and rows y0..y1, both inclusive
    (PIL fills a polygon's boundary pixels)."""
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]


# split -> image name -> objects in drawing order (later ones draw over earlier ones).
IMAGES = {
    "val": {
        "aachen_000000_000019": [
            {"label": "road", "polygon": rect(0, 56, 127, 63)},
            {"label": "car", "polygon": rect(4, 4, 43, 23)},
            {"label": "person", "polygon": rect(60, 10, 79, 49)},
            # Covers the person's lower right 10 x 18 pixels: 620 of its 800 pixels stay.
            {"label": "bicycle", "polygon": rect(70, 32, 99, 61)},
        ],
        "aachen_000001_000019": [
            {"label": "cargroup", "polygon": rect(0, 30, 29, 59)},
            {"label": "car", "polygon": rect(40, 20, 79, 49)},
            {"label": "caravan", "polygon": rect(90, 20, 119, 49)},  # ignoreInEval: no box
        ],
        "bochum_000000_000313": [
            {"label": "rider", "polygon": rect(10, 10, 29, 49)},
            {"label": "bus", "polygon": rect(50, 5, 109, 54)},
            {"label": "car", "polygon": rect(0, 0, 20, 5), "deleted": 1},
        ],
        "bochum_000001_000313": [{"label": "road", "polygon": rect(0, 40, 127, 63)}],
    },
    "train": {
        "cologne_000000_000019": [
            {"label": "truck", "polygon": rect(8, 8, 47, 39)},
            {"label": "persongroup", "polygon": rect(60, 0, 90, 20)},
        ],
    },
}

PERSON, RIDER, CAR, TRUCK, BUS, BICYCLE = 0, 1, 2, 3, 4, 7
# image name -> (category_id, XYXY box with x1/y1 one past the last pixel, iscrowd), in
# increasing instanceIds value (group regions have the bare label id, instances id * 1000 + n).
EXPECTED_ANNOTATIONS = {
    "aachen_000000_000019": [
        (PERSON, [60, 10, 80, 50], 0),
        (CAR, [4, 4, 44, 24], 0),
        (BICYCLE, [70, 32, 100, 62], 0),
    ],
    "aachen_000001_000019": [(CAR, [0, 30, 30, 60], 1), (CAR, [40, 20, 80, 50], 0)],
    "bochum_000000_000313": [(RIDER, [10, 10, 30, 50], 0), (BUS, [50, 5, 110, 55], 0)],
    "bochum_000001_000313": [],
    "cologne_000000_000019": [(PERSON, [60, 0, 91, 21], 1), (TRUCK, [8, 8, 48, 40], 0)],
}

# Official AP of the ground-truth boxes filled as masks: every instance is a full rectangle (IoU 1)
# but the occluded person, 620 pixels in its 800-pixel box: IoU 0.775, matched at the overlaps
# 0.5..0.75 (6 of 10). Mean over the 5 classes with ground truth (car, person, bicycle, rider, bus).
BOXMASK_PERSON_AP = 60.0
BOXMASK_AP = (4 * 100.0 + BOXMASK_PERSON_AP) / 5


def write_instance_ids(json_file, png_file):
    """The toolkit's json2instanceImg, saved as the 16-bit png of the Cityscapes download: its own
    save of a 32-bit "I" image fails on Pillow >= 13."""
    annotation = Annotation()
    annotation.fromJsonFile(json_file)
    ids = np.asarray(createInstanceImage(annotation, "ids"))
    Image.fromarray(ids.astype(np.uint16)).save(png_file)


def write_cityscapes(root, images=IMAGES):
    """The Cityscapes layout under ``root``; the id images come from the toolkit's converters."""
    for split, split_images in images.items():
        for name, objects in split_images.items():
            city = name.split("_")[0]
            image_dir, gt_dir = root / "leftImg8bit" / split / city, root / "gtFine" / split / city
            image_dir.mkdir(parents=True, exist_ok=True)
            gt_dir.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (WIDTH, HEIGHT)).save(image_dir / f"{name}_leftImg8bit.png")
            json_file = str(gt_dir / f"{name}_gtFine_polygons.json")
            with open(json_file, "w") as f:
                json.dump({"imgHeight": HEIGHT, "imgWidth": WIDTH, "objects": objects}, f)
            write_instance_ids(json_file, str(gt_dir / f"{name}_gtFine_instanceIds.png"))
            json2labelImg(json_file, str(gt_dir / f"{name}_gtFine_labelIds.png"))
    return root


def register(name, root, split="val"):
    register_cityscapes_detection(name, root / "leftImg8bit" / split, root / "gtFine" / split)
    return name


@pytest.fixture(scope="module")
def cityscapes_root(tmp_path_factory):
    return write_cityscapes(tmp_path_factory.mktemp("datasets") / "cityscapes")


@pytest.fixture(scope="module")
def val_name(cityscapes_root):
    return register("corrloss_test_cityscapes_detection_val", cityscapes_root)


def image_name(dataset_dict):
    return os.path.basename(dataset_dict["file_name"])[: -len("_leftImg8bit.png")]


def instance_masks(instance_ids_file):
    """(N, H, W) bool masks of the instances and group regions of the 8 classes, in increasing id
    order: the order of the loader's annotations."""
    ids = np.asarray(Image.open(instance_ids_file))
    values = [
        v
        for v in np.unique(ids).tolist()
        if id2label[v // 1000 if v >= 1000 else v].name in CITYSCAPES_THING_CLASSES
    ]
    masks = np.array([ids == v for v in values], dtype=bool).reshape(len(values), *ids.shape)
    return torch.from_numpy(masks)


def gt_predictions(dataset_dict, gt_dir, shift=0.0, with_masks=False):
    """The image's ground truth as detectron2 outputs: boxes (moved right by ``shift`` pixels)
    with score 1, and with ``with_masks`` each instance's pixels. Group regions become car/person
    detections of score 0.5, which both evaluations must ignore."""
    annotations = dataset_dict["annotations"]
    boxes = torch.tensor([a["bbox"] for a in annotations], dtype=torch.float32).reshape(-1, 4)
    boxes[:, 0::2] += shift
    classes = torch.tensor([a["category_id"] for a in annotations], dtype=torch.int64)
    scores = torch.tensor([0.5 if a["iscrowd"] else 1.0 for a in annotations])
    instances = Instances(
        (dataset_dict["height"], dataset_dict["width"]),
        pred_boxes=Boxes(boxes),
        scores=scores,
        pred_classes=classes,
    )
    if with_masks:
        masks = instance_masks(
            cityscapes_gt_file(gt_dir, dataset_dict["file_name"], "gtFine_instanceIds.png")
        )
        columns = int(shift)
        instances.pred_masks = torch.zeros_like(masks)
        instances.pred_masks[:, :, columns:] = masks[:, :, : masks.shape[2] - columns]
        assert len(instances.pred_masks) == len(instances)
    return instances


def evaluate(name, output_dir, dataset_dicts=None, **prediction_options):
    """Runs the Cityscapes evaluators over ``dataset_dicts`` (default: all of ``name``) with their
    ground truth fed back as predictions."""
    cfg = get_cfg()
    cfg.OUTPUT_DIR = str(output_dir)
    evaluator = build_cityscapes_evaluator(cfg, name)
    gt_dir = MetadataCatalog.get(name).gt_dir
    evaluator.reset()
    for d in DatasetCatalog.get(name) if dataset_dicts is None else dataset_dicts:
        inputs = {k: d[k] for k in ("file_name", "image_id", "height", "width")}
        instances = gt_predictions(d, gt_dir, **prediction_options)
        evaluator.process([inputs], [{"instances": instances}])
    return evaluator.evaluate()


def test_splits_are_registered_at_import_under_detectron2_datasets():
    root = os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets"))
    assert set(CITYSCAPES_DETECTION_SPLITS) == {
        "cityscapes_fine_detection_train",
        "cityscapes_fine_detection_val",
    }
    for name, split in CITYSCAPES_DETECTION_SPLITS.items():
        assert name in DatasetCatalog.list()
        metadata = MetadataCatalog.get(name)
        assert metadata.thing_classes == [
            "person",
            "rider",
            "car",
            "truck",
            "bus",
            "train",
            "motorcycle",
            "bicycle",
        ]
        assert metadata.image_dir == os.path.join(root, "cityscapes", "leftImg8bit", split)
        assert metadata.gt_dir == os.path.join(root, "cityscapes", "gtFine", split)


def leaf_evaluators(evaluator):
    if isinstance(evaluator, DatasetEvaluators):
        return [leaf for e in evaluator._evaluators for leaf in leaf_evaluators(e)]
    return [evaluator]


def test_cityscapes_datasets_get_box_ap_and_the_official_evaluator(val_name, tmp_path):
    """What train_net.py's trainer builds for a Cityscapes dataset (their results: tests below)."""
    cfg = get_cfg()
    add_corrloss_config(cfg)
    cfg.OUTPUT_DIR = str(tmp_path)
    types = [type(e) for e in leaf_evaluators(build_evaluator(cfg, val_name))]
    assert COCOEvaluator in types and CityscapesInstanceLevelEvaluator in types


def test_boxes_classes_and_crowds_match_hand_made_expectations(cityscapes_root, val_name):
    train_name = register("corrloss_test_cityscapes_detection_train", cityscapes_root, "train")
    for name, split in ((val_name, "val"), (train_name, "train")):
        dicts = DatasetCatalog.get(name)
        assert [image_name(d) for d in dicts] == sorted(IMAGES[split])
        assert [d["image_id"] for d in dicts] == list(range(len(dicts)))
        for d in dicts:
            assert (d["height"], d["width"]) == (HEIGHT, WIDTH)
            assert os.path.isfile(d["file_name"])
            found = [(a["category_id"], a["bbox"], a["iscrowd"]) for a in d["annotations"]]
            assert found == EXPECTED_ANNOTATIONS[image_name(d)], image_name(d)


CITYSCAPES_CONFIGS = sorted(
    glob.glob(os.path.join(REPO, "configs", "Cityscapes", "*.yaml"))
    + glob.glob(os.path.join(REPO, "projects", "*", "configs", "cityscapes_*.yaml"))
)


@pytest.mark.parametrize("path", CITYSCAPES_CONFIGS, ids=os.path.basename)
def test_configs_train_on_the_protocol_scales(path):
    cfg = get_cfg()
    add_corrloss_config(cfg)
    cfg.merge_from_file(path)
    assert cfg.DATASETS.TRAIN == ("cityscapes_fine_detection_train",)
    assert cfg.DATASETS.TEST == ("cityscapes_fine_detection_val",)
    assert (cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST) == (1024, 2048)
    augmentations = T.AugmentationList(build_train_augmentation(cfg))
    np.random.seed(0)
    shorter_sides = []
    for _ in range(12):  # a 2048 x 1024 Cityscapes frame
        aug_input = T.AugInput(np.zeros((1024, 2048), dtype=np.uint8))
        augmentations(aug_input)
        height, width = aug_input.image.shape[:2]
        assert 800 <= min(height, width) <= 1024 and max(height, width) <= 2048
        shorter_sides.append(min(height, width))
    assert max(shorter_sides) - min(shorter_sides) > 100  # drawn over the range, not fixed


def test_missing_or_malformed_layout_names_the_expected_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"leftImg8bit/val/\*/\*_leftImg8bit.png.*gtFine"):
        DatasetCatalog.get(register("corrloss_test_cityscapes_empty", tmp_path / "nothing"))

    root = write_cityscapes(tmp_path / "no_json", {"val": {"ulm_000000_000019": []}})
    json_file = root / "gtFine" / "val" / "ulm" / "ulm_000000_000019_gtFine_polygons.json"
    json_file.unlink()
    with pytest.raises(FileNotFoundError, match=f"expected {json_file}"):
        DatasetCatalog.get(register("corrloss_test_cityscapes_no_json", root))

    root = write_cityscapes(tmp_path / "bad", {"val": {"ulm_000000_000019": []}})
    json_file = root / "gtFine" / "val" / "ulm" / "ulm_000000_000019_gtFine_polygons.json"
    json_file.write_text('{"imgWidth": 128, "objects": []}')
    with pytest.raises(ValueError, match=f"{json_file} is not a Cityscapes polygon annotation"):
        DatasetCatalog.get(register("corrloss_test_cityscapes_bad_json", root))
    spaceship = {"label": "spaceship", "polygon": rect(0, 0, 3, 3)}
    json_file.write_text(json.dumps({"imgHeight": 8, "imgWidth": 8, "objects": [spaceship]}))
    with pytest.raises(ValueError, match=f"could not render {json_file}"):
        DatasetCatalog.get("corrloss_test_cityscapes_bad_json")


def test_ground_truth_fed_back_scores_100_in_box_ap_and_official_mask_ap(
    val_name, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    results = evaluate(val_name, tmp_path / "out", with_masks=True)
    assert set(results) == {"bbox", "cityscapes_official_mask"}
    assert results["bbox"]["AP"] == pytest.approx(100.0)
    official = results["cityscapes_official_mask"]
    assert official["AP"] == pytest.approx(100.0) and official["AP50"] == pytest.approx(100.0)
    for name in ("person", "rider", "car", "bus", "bicycle"):
        assert official[f"AP-{name}"] == pytest.approx(100.0)
        assert official[f"AP50-{name}"] == pytest.approx(100.0)
    assert all(np.isnan(official[f"AP-{name}"]) for name in ("truck", "train", "motorcycle"))
    # nothing in the current directory or the toolkit's folder; the full result in the output folder
    assert os.listdir(tmp_path) == ["out"]
    toolkit_dir = os.path.dirname(instance_level_eval.__file__)
    assert not os.path.exists(os.path.join(toolkit_dir, "gtInstances.json"))
    with open(tmp_path / "out" / "inference" / val_name / "cityscapes_official_mask.json") as f:
        assert json.load(f)["averages"]["allAp"] == pytest.approx(1.0)
    # the numpy and json writer replacements ended with the call
    assert instance_level_eval.np is np
    assert instance_level_eval.writeDict2JSON.__module__ == "cityscapesscripts.helpers.csHelpers"


def test_box_model_gets_the_official_score_of_its_box_filled_masks(val_name, tmp_path):
    results = evaluate(val_name, tmp_path)
    assert set(results) == {"bbox", "cityscapes_official_boxmask"}
    assert results["bbox"]["AP"] == pytest.approx(100.0)
    official = results["cityscapes_official_boxmask"]
    assert official["AP-person"] == pytest.approx(BOXMASK_PERSON_AP)
    assert official["AP"] == pytest.approx(BOXMASK_AP)
    assert official["AP50"] == pytest.approx(100.0)


def test_shifted_boxes_lower_both_scores(val_name, tmp_path):
    results = evaluate(val_name, tmp_path, shift=6.0)
    assert results["bbox"]["AP"] < 90.0
    assert results["cityscapes_official_boxmask"]["AP"] < BOXMASK_AP - 10.0


def test_shifted_masks_score_less_on_the_official_metric(val_name, tmp_path):
    official = evaluate(val_name, tmp_path, shift=3.0, with_masks=True)["cityscapes_official_mask"]
    assert 0.0 < official["AP"] < 90.0 and official["AP50"] <= 100.0


def test_loader_keeps_each_instance_mask(cityscapes_root, val_name):
    cfg = get_cfg()
    cfg.MODEL.MASK_ON = True
    cfg.INPUT.MASK_FORMAT = "bitmask"
    cfg.INPUT.MIN_SIZE_TEST = 0  # no resize
    mapper = DatasetMapper(cfg, is_train=True, augmentations=[])
    gt_dir = MetadataCatalog.get(val_name).gt_dir
    for d in DatasetCatalog.get(val_name):
        expected = instance_masks(
            cityscapes_gt_file(gt_dir, d["file_name"], "gtFine_instanceIds.png")
        )
        decoded = [mask_util.decode(a["segmentation"]) for a in d["annotations"]]
        assert torch.equal(
            torch.from_numpy(np.array(decoded, dtype=bool)).reshape(expected.shape), expected
        )
        # what a mask model trains on: the individual instances (not the group regions) as bit masks
        instances = mapper(d)["instances"]
        individual = torch.tensor([not a["iscrowd"] for a in d["annotations"]], dtype=torch.bool)
        if individual.any():  # (detectron2 gives an image without instances no gt_masks)
            assert torch.equal(instances.gt_masks.tensor, expected[individual])


def test_images_without_predictions_count_their_ground_truth_as_missed(val_name, tmp_path):
    dicts = DatasetCatalog.get(val_name)
    bochum = [d for d in dicts if image_name(d) == "bochum_000000_000313"]
    without_detections = [dict(d, annotations=[]) for d in bochum]
    results = evaluate(
        val_name, tmp_path, dataset_dicts=without_detections + [d for d in dicts if d not in bochum]
    )
    # rider and bus have ground truth only there and no detection left: AP 0 for both classes
    official = results["cityscapes_official_boxmask"]
    assert official["AP-rider"] == 0.0 and official["AP-bus"] == 0.0
    assert official["AP"] == pytest.approx((2 * 100.0 + BOXMASK_PERSON_AP) / 5)
    assert results["bbox"]["AP"] == pytest.approx(300.0 / 5)


def test_missing_or_mismatched_instance_ids_images_are_named(tmp_path):
    objects = IMAGES["val"]["aachen_000000_000019"]
    root = write_cityscapes(tmp_path / "cityscapes", {"val": {"ulm_000000_000019": objects}})
    name = register("corrloss_test_cityscapes_small_ids", root)
    (dataset_dict,) = DatasetCatalog.get(name)
    instance_ids_file = cityscapes_gt_file(
        MetadataCatalog.get(name).gt_dir, dataset_dict["file_name"], "gtFine_instanceIds.png"
    )
    Image.new("I;16", (WIDTH // 2, HEIGHT // 2)).save(instance_ids_file)
    with pytest.raises(ValueError, match=f"ground truth {instance_ids_file} is 32 x 64"):
        evaluate(name, tmp_path / "out")
    os.remove(instance_ids_file)
    with pytest.raises(FileNotFoundError, match=f"e.g. {instance_ids_file}"):
        evaluate(name, tmp_path / "out")


def test_ground_truth_changes_are_never_hidden_by_a_cache(tmp_path):
    root = write_cityscapes(tmp_path / "cityscapes", {"val": IMAGES["val"]})
    name = register("corrloss_test_cityscapes_changing", root)
    first = evaluate(name, tmp_path / "first")
    assert first["cityscapes_official_boxmask"]["AP"] == pytest.approx(BOXMASK_AP)
    # the occluded person's ground truth becomes its full rectangle
    without_bicycle = IMAGES["val"]["aachen_000000_000019"][:3]
    write_cityscapes(root, {"val": {"aachen_000000_000019": without_bicycle}})
    results = evaluate(name, tmp_path / "second")
    assert results["cityscapes_official_boxmask"]["AP"] == pytest.approx(100.0)
    assert results["bbox"]["AP"] == pytest.approx(100.0)
    assert np.isnan(results["bbox"]["AP-bicycle"])  # the bicycle is gone


def two_process_worker(root, output_dir):
    name = register("corrloss_test_cityscapes_two_process", root)
    dicts = DatasetCatalog.get(name)
    rank = torch.distributed.get_rank()
    results = evaluate(name, output_dir, dataset_dicts=dicts[rank::2])
    if rank == 0:
        torch.save(results, os.path.join(output_dir, "results.pt"))
    else:
        assert results == {}


@pytest.mark.slow
def test_two_process_evaluation_gathers_every_image(cityscapes_root, tmp_path):
    launch_processes(two_process_worker, 2, dist_url="auto", args=(cityscapes_root, str(tmp_path)))
    results = torch.load(tmp_path / "results.pt")
    assert results["bbox"]["AP"] == pytest.approx(100.0)
    assert results["cityscapes_official_boxmask"]["AP"] == pytest.approx(BOXMASK_AP)
