"""CorrelationEvaluator against values computed by hand on hand-made detections."""

import json
import math
import os
import uuid

import numpy as np
import pytest
import torch
from detectron2.data.datasets import register_coco_instances
from detectron2.structures import Boxes, Instances
from scipy.stats import spearmanr

import corrloss_d2  # noqa: F401
from corrloss_d2.engine import launch_processes
from corrloss_d2.evaluation import CorrelationEvaluator
from corrloss_d2.evaluation.coco_ap import coco_box_ap, load_coco
from corrloss_d2.evaluation.correlation import RESULTS_FILE, greedy_match
from corrloss_d2.modeling import candidates as candidate_recording

SIZE = 100


def write_dataset(folder, gt_per_image):
    """gt_per_image: {image_id: [(x0, y0, x1, y1, category_id, iscrowd)]} -> COCO json path.
    Category ids 1 and 2 (contiguous classes 0 and 1)."""
    images = [
        {"id": i, "file_name": f"{i}.png", "height": SIZE, "width": SIZE} for i in gt_per_image
    ]
    annotations = [
        {
            "id": k + 1,
            "image_id": i,
            "category_id": c,
            "bbox": [x0, y0, x1 - x0, y1 - y0],
            "area": (x1 - x0) * (y1 - y0),
            "iscrowd": crowd,
        }
        for k, (i, (x0, y0, x1, y1, c, crowd)) in enumerate(
            (i, box) for i, boxes in gt_per_image.items() for box in boxes
        )
    ]
    path = os.path.join(folder, "gt.json")
    with open(path, "w") as f:
        json.dump(
            {
                "images": images,
                "annotations": annotations,
                "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
            },
            f,
        )
    return path


def register(folder, gt_per_image):
    name = f"corr_eval_{uuid.uuid4().hex[:8]}"
    register_coco_instances(name, {}, write_dataset(folder, gt_per_image), str(folder))
    return name


def instances(rows):
    """rows: [(x0, y0, x1, y1, score, class)]."""
    table = torch.tensor(rows, dtype=torch.float32).reshape(-1, 6)
    result = Instances((SIZE, SIZE))
    result.pred_boxes = Boxes(table[:, :4])
    result.scores = table[:, 4]
    result.pred_classes = table[:, 5].long()
    return result


def evaluate(name, outputs_per_image, output_dir=None, **kwargs):
    evaluator = CorrelationEvaluator(name, distributed=False, output_dir=output_dir, **kwargs)
    evaluator.reset()
    for image_id, output in outputs_per_image.items():
        evaluator.process([{"image_id": image_id}], [output])
    return evaluator.evaluate()["correlation"]


def box_of_iou(iou, height=10):
    """A box [0, 0, 10, 10·iou] whose IoU with [0, 0, 10, 10] is ``iou``."""
    return [0, 0, 10, height * iou]


GT = {
    1: [(0, 0, 10, 10, 1, 0), (50, 50, 90, 90, 2, 0)],
    2: [(0, 0, 10, 10, 1, 0), (60, 0, 100, 40, 1, 1)],  # the second is a crowd box
    3: [],  # no boxes
    4: [(20, 20, 60, 60, 2, 0)],
}  # no predictions


def test_image_level_rho_uses_candidates_and_skips_images_with_fewer_than_two(tmp_path):
    name = register(tmp_path, GT)
    # Image 1, class 0: positives with IoU 1.0, 0.8, 0.6 and scores .9, .5, .7; a negative (IoU .4)
    # with the top score, and a class-1 box on the class-0 object (not a positive).
    candidates = instances(
        [
            [*box_of_iou(1.0), 0.9, 0],
            [*box_of_iou(0.8), 0.5, 0],
            [*box_of_iou(0.6), 0.7, 0],
            [*box_of_iou(0.4), 0.95, 0],
            [*box_of_iou(1.0), 0.99, 1],
        ]
    )
    output_1 = {"instances": instances([[*box_of_iou(1.0), 0.9, 0]]), "candidates": candidates}
    output_2 = {"instances": instances([[*box_of_iou(0.9), 0.8, 0]])}  # one positive: no ρ
    result = evaluate(
        name,
        {
            1: output_1,
            2: output_2,
            3: {"instances": instances([])},
            4: {"instances": instances([])},
        },
    )
    expected = spearmanr([0.9, 0.5, 0.7], [1.0, 0.8, 0.6])[0]
    assert expected == pytest.approx(0.5)
    assert result["image_level_rho"] == pytest.approx(expected)


def test_class_level_rho_and_ap_bounds_on_hand_made_true_positives(tmp_path):
    # One class-0 object per image on 6 images; the detections' IoUs and scores are chosen.
    ious = [0.95, 0.9, 0.8, 0.7, 0.6, 0.55]
    scores = [0.3, 0.9, 0.5, 0.8, 0.4, 0.7]
    gt = {i + 1: [(0, 0, 10, 10, 1, 0)] for i in range(len(ious))}
    name = register(tmp_path, gt)
    outputs = {
        i + 1: {
            "instances": instances([[*box_of_iou(u), s, 0], [30, 30, 60, 60, s / 2, 0]])
        }  # + a false positive
        for i, (u, s) in enumerate(zip(ious, scores))
    }
    result = evaluate(name, outputs, output_dir=str(tmp_path))
    assert result["class_level_rho"] == pytest.approx(spearmanr(scores, ious)[0])
    assert result["ap_lower_bound"] <= result["ap"] <= result["ap_upper_bound"]
    assert result["ap_lower_bound"] < result["ap_upper_bound"]

    # Scores already in IoU order: the upper bound is the AP itself.
    ordered = {
        i + 1: {"instances": instances([[*box_of_iou(u), s, 0], [30, 30, 60, 60, 0.01, 0]])}
        for i, (u, s) in enumerate(zip(ious, sorted(scores, reverse=True)))
    }
    perfect = evaluate(name, ordered)
    assert perfect["class_level_rho"] == pytest.approx(1.0)
    assert perfect["ap"] == pytest.approx(perfect["ap_upper_bound"])
    assert perfect["ap_lower_bound"] < perfect["ap"]

    written = json.load(open(tmp_path / RESULTS_FILE))
    assert written["metrics"]["class_level_rho"] == pytest.approx(result["class_level_rho"])
    assert [p["num_true_positives"] for p in written["per_class"]] == [6, 0]
    assert written["per_class"][1]["rho"] is None  # undefined for a class without detections
    assert sorted(written["true_positives"]["iou"]) == pytest.approx(sorted(ious))


def test_best_regressed_recall_on_a_constructed_image(tmp_path):
    name = register(
        tmp_path, {1: [(0, 0, 10, 10, 1, 0), (50, 50, 90, 90, 1, 0), (0, 60, 20, 80, 2, 0)]}
    )
    candidates = instances(
        [
            [0, 0, 10, 10, 0.9, 0],  # object 1's best-regressed candidate: rank 0
            [0, 0, 10, 8, 0.95, 0],  # a worse box of object 1 scored higher -> object 1 is rank 1
            [50, 50, 90, 90, 0.5, 0],  # object 2's best-regressed: rank 3
            [50, 50, 90, 80, 0.8, 0],
            [0, 60, 20, 80, 0.99, 0],  # object 3 (class 1) has only a candidate of the wrong class
        ]
    )
    result = evaluate(
        name, {1: {"instances": candidates[:1], "candidates": candidates}}, top_n=(1, 2, 4)
    )
    # Ranks of the best-regressed candidates: object 1 -> 2 (after .99 and .95), object 2 -> 4,
    # object 3 -> none.
    assert result["br_recall@1"] == 0
    assert result["br_recall@2"] == 0
    assert result["br_recall@4"] == pytest.approx(1 / 3)
    result = evaluate(
        name, {1: {"instances": candidates[:1], "candidates": candidates}}, top_n=(3, 5)
    )
    assert (result["br_recall@3"], result["br_recall@5"]) == pytest.approx((1 / 3, 2 / 3))


def test_images_without_boxes_or_predictions_and_crowd_boxes(tmp_path):
    name = register(tmp_path, GT)
    outputs = {
        1: {"instances": instances([])},
        2: {"instances": instances([[60, 0, 100, 40, 0.9, 0], [0, 0, 10, 10, 0.8, 0]])},
        3: {"instances": instances([[0, 0, 50, 50, 0.9, 1]])},
        4: {"instances": instances([])},
    }
    result = evaluate(name, outputs, output_dir=str(tmp_path))
    counts = json.load(open(tmp_path / RESULTS_FILE))["counts"]
    # The box on the crowd region is not a true positive; one true positive in all.
    assert counts == {
        "images": 4,
        "images_with_image_level_rho": 0,
        "ground_truths": 4,
        "true_positives": 1,
    }
    assert math.isnan(result["image_level_rho"]) and math.isnan(result["class_level_rho"])
    assert 0 < result["ap"] < 100 and result["br_recall@100"] == pytest.approx(1 / 4)
    # Nothing predicted anywhere.
    empty = evaluate(name, {i: {"instances": instances([])} for i in GT})
    assert empty["ap"] == empty["ap_upper_bound"] == 0 and empty["br_recall@10"] == 0


def test_greedy_match_takes_the_best_free_ground_truth_in_score_order():
    ious = np.array([[0.6, 0.7], [0.9, 0.8], [0.4, 0.3]])
    assert greedy_match(ious, 0.5).tolist() == [1, 0, -1]
    assert greedy_match(np.zeros((2, 0)), 0.5).tolist() == [-1, -1]


def test_reset_and_evaluate_switch_candidate_recording(tmp_path):
    evaluator = CorrelationEvaluator(register(tmp_path, GT), distributed=False)
    assert not candidate_recording.is_recording()
    evaluator.reset()
    assert candidate_recording.is_recording()
    evaluator.evaluate()
    assert not candidate_recording.is_recording()


def random_detections(seed, gt_per_image):
    """Noisy copies of the ground truth plus clutter, per image."""
    rng = np.random.default_rng(seed)
    outputs = {}
    for image_id, boxes in gt_per_image.items():
        rows = []
        for x0, y0, x1, y1, c, _ in boxes:
            for _ in range(3):
                jitter = rng.normal(0, 3, size=4)
                rows.append(
                    [
                        x0 + jitter[0],
                        y0 + jitter[1],
                        x1 + jitter[2],
                        y1 + jitter[3],
                        rng.uniform(0.05, 1),
                        c - 1,
                    ]
                )
        for _ in range(2):
            x, y = rng.uniform(0, 70, size=2)
            rows.append([x, y, x + 20, y + 25, rng.uniform(0.05, 0.5), int(rng.integers(2))])
        outputs[image_id] = {"instances": instances(rows)}
    return outputs


def random_ground_truth(seed, num_images=12):
    rng = np.random.default_rng(seed)
    gt = {}
    for image_id in range(1, num_images + 1):
        boxes = []
        for _ in range(int(rng.integers(0, 4))):
            x, y = rng.uniform(0, 60, size=2)
            w, h = rng.uniform(8, 40, size=2)
            boxes.append(
                (float(x), float(y), float(x + w), float(y + h), int(rng.integers(1, 3)), 0)
            )
        gt[image_id] = boxes
    return gt


def _two_process_worker(folder, gt, result_file):
    import detectron2.utils.comm as comm

    name = "corr_eval_two_process"
    register_coco_instances(name, {}, os.path.join(folder, "gt.json"), folder)
    evaluator = CorrelationEvaluator(name, distributed=True)
    evaluator.reset()
    outputs = random_detections(0, gt)
    for image_id in list(outputs)[comm.get_rank() :: comm.get_world_size()]:
        evaluator.process([{"image_id": image_id}], [outputs[image_id]])
    result = evaluator.evaluate()
    if comm.is_main_process():
        with open(result_file, "w") as f:
            json.dump(result["correlation"], f)


@pytest.mark.slow
def test_two_process_evaluation_equals_one_process(tmp_path):
    gt = random_ground_truth(0)
    name = register(tmp_path, gt)
    one_process = evaluate(name, random_detections(0, gt))
    result_file = str(tmp_path / "two.json")
    launch_processes(_two_process_worker, 2, dist_url="auto", args=(str(tmp_path), gt, result_file))
    two_process = json.load(open(result_file))
    assert two_process == pytest.approx(one_process)  # the same detections, merged: no training
    assert -1 <= one_process["class_level_rho"] <= 1 and -1 <= one_process["image_level_rho"] <= 1


def test_faster_coco_eval_ap_equals_pycocotools(tmp_path):
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt = random_ground_truth(1, num_images=30)
    json_file = write_dataset(str(tmp_path), gt)
    detections = []
    for image_id, output in random_detections(1, gt).items():
        boxes = output["instances"].pred_boxes.tensor.tolist()
        for box, score, c in zip(
            boxes, output["instances"].scores.tolist(), output["instances"].pred_classes.tolist()
        ):
            detections.append(
                {
                    "image_id": image_id,
                    "category_id": c + 1,
                    "score": score,
                    "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]],
                }
            )
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(json_file)
        reference = COCOeval(coco, coco.loadRes(detections), "bbox")
        reference.evaluate()
        reference.accumulate()
        reference.summarize()
    assert coco_box_ap(load_coco(json_file), detections) == pytest.approx(
        reference.stats[0] * 100, abs=1e-6
    )


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("TEST.CORRELATION_EVAL.IOU_THRESHOLD", 0.0, r"IOU_THRESHOLD = 0.0 .*\(0, 1\]"),
        (
            "TEST.CORRELATION_EVAL.BR_RECALL_TOP_N",
            [10, 0],
            r"BR_RECALL_TOP_N = \[10, 0\] .*integers >= 1",
        ),
    ],
)
def test_bad_correlation_eval_keys_name_the_key(key, value, message):
    from detectron2.config import get_cfg

    from corrloss_d2 import add_corrloss_config, validate_corrloss_config

    cfg = get_cfg()
    add_corrloss_config(cfg)
    cfg.merge_from_list([key, value])
    with pytest.raises(ValueError, match=message):
        validate_corrloss_config(cfg)


def test_build_evaluator_adds_the_correlation_evaluator_unless_disabled(tmp_path):
    from detectron2.config import get_cfg
    from detectron2.evaluation import COCOEvaluator, DatasetEvaluators

    from corrloss_d2 import add_corrloss_config
    from corrloss_d2.evaluation import build_evaluator

    name = register(tmp_path, GT)
    cfg = get_cfg()
    add_corrloss_config(cfg)
    cfg.merge_from_list(["OUTPUT_DIR", str(tmp_path), "TEST.CORRELATION_EVAL.BR_RECALL_TOP_N", [5]])
    evaluators = build_evaluator(cfg, name)
    assert isinstance(evaluators, DatasetEvaluators)
    box, correlation = evaluators._evaluators
    assert isinstance(box, COCOEvaluator) and isinstance(correlation, CorrelationEvaluator)
    assert correlation._top_n == (5,)
    cfg.TEST.CORRELATION_EVAL.ENABLED = False
    assert isinstance(build_evaluator(cfg, name), COCOEvaluator)
