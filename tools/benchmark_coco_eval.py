#!/usr/bin/env python
"""Speed of COCO box AP: pycocotools vs faster-coco-eval (vs detectron2's compiled COCOeval_opt
where it exists) on a COCO-val-sized synthetic set, and that they give the same AP.

    python tools/benchmark_coco_eval.py [--images 5000] [--boxes-per-image 7.3] \
        [--dets-per-image 100]

CorrelationEvaluator computes AP three times (AP and its two bounds), so this is its main cost.
Times are seconds of evaluate + accumulate + summarize in this one process, wall-clock and CPU
(all threads; robust to other load on the machine); compare them as ratios.
"""

import argparse
import contextlib
import io
import json
import os
import tempfile
import time

import numpy as np


def synthetic_coco(num_images: int, boxes_per_image: float, dets_per_image: int, seed: int = 0):
    """COCO-val-like ground truth (80 classes, 640x480) and detections: jittered copies of the
    ground truth plus background boxes, ``dets_per_image`` per image."""
    rng = np.random.default_rng(seed)
    images, annotations, detections = [], [], []
    for image_id in range(1, num_images + 1):
        images.append({"id": image_id, "width": 640, "height": 480, "file_name": f"{image_id}.jpg"})
        num_gt = rng.poisson(boxes_per_image)
        wh = np.exp(rng.uniform(np.log(8), np.log(400), size=(num_gt, 2)))
        xy = rng.uniform(0, 1, size=(num_gt, 2)) * np.maximum([640, 480] - wh, 1)
        classes = rng.integers(1, 81, size=num_gt)
        for box, c in zip(np.concatenate([xy, wh], axis=1), classes):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": int(c),
                    "bbox": box.tolist(),
                    "area": float(box[2] * box[3]),
                    "iscrowd": 0,
                }
            )
        copies = (
            rng.integers(0, num_gt, size=min(dets_per_image // 2, 3 * num_gt)) if num_gt else []
        )
        for k in copies:
            box = np.concatenate([xy[k], wh[k]]) * rng.normal(1, 0.08, size=4)
            detections.append(
                {
                    "image_id": image_id,
                    "category_id": int(classes[k]),
                    "bbox": box.tolist(),
                    "score": float(rng.uniform(0.05, 1)),
                }
            )
        for _ in range(dets_per_image - len(copies)):
            w, h = np.exp(rng.uniform(np.log(8), np.log(300), size=2))
            x, y = rng.uniform(0, 640 - w), rng.uniform(0, 480 - h)
            detections.append(
                {
                    "image_id": image_id,
                    "category_id": int(rng.integers(1, 81)),
                    "bbox": [x, y, w, h],
                    "score": float(rng.uniform(0.01, 0.5)),
                }
            )
    categories = [{"id": c, "name": str(c)} for c in range(1, 81)]
    return {"images": images, "annotations": annotations, "categories": categories}, detections


def time_backend(name: str, json_file: str, detections):
    with contextlib.redirect_stdout(io.StringIO()):
        if name == "pycocotools":
            from pycocotools.coco import COCO
            from pycocotools.cocoeval import COCOeval
        elif name == "faster_coco_eval":
            from faster_coco_eval import COCO
            from faster_coco_eval import COCOeval_faster as COCOeval
        else:
            from detectron2.evaluation.fast_eval_api import COCOeval_opt as COCOeval
            from pycocotools.coco import COCO
        coco_gt = COCO(json_file)
        coco_dt = coco_gt.loadRes(detections)
        started, cpu_started = time.perf_counter(), time.process_time()
        coco_eval = COCOeval(coco_gt, coco_dt, "bbox")
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
        seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    return seconds, cpu_seconds, float(coco_eval.stats[0]) * 100


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--boxes-per-image", type=float, default=7.3)
    parser.add_argument("--dets-per-image", type=int, default=100)
    args = parser.parse_args()
    from corrloss_d2.compiled_ops import has_compiled_ops

    gt, detections = synthetic_coco(args.images, args.boxes_per_image, args.dets_per_image)
    backends = ["pycocotools", "faster_coco_eval"] + (["detectron2"] if has_compiled_ops() else [])
    with tempfile.TemporaryDirectory() as folder:
        json_file = os.path.join(folder, "gt.json")
        with open(json_file, "w") as f:
            json.dump(gt, f)
        print(
            f"{len(gt['images'])} images, {len(gt['annotations'])} boxes, "
            f"{len(detections)} detections"
        )
        results = {name: time_backend(name, json_file, detections) for name in backends}
    reference = results["pycocotools"][0]
    for name, (seconds, cpu_seconds, ap) in results.items():
        print(
            f"{name:18s} {seconds:8.2f} s wall ({reference / seconds:5.1f}x pycocotools), "
            f"{cpu_seconds:8.2f} s CPU, AP {ap:.4f}"
        )


if __name__ == "__main__":
    main()
