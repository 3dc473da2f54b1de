"""The paper's score-localisation correlation measures as a detectron2 evaluator (SPEC §1.1, §1.2).

Conventions: boxes XYXY in the input image's coordinates (what detectron2 meta-architectures
return), classes contiguous 0..K-1, IoU thresholds and COCO matching as pycocotools computes them
(non-crowd ground truths only can make a true positive), correlations are Spearman's ρ in [-1, 1]
(scipy), AP on detectron2's 0-100 scale.
"""

import itertools
import json
import logging
import os
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence, Tuple

import detectron2.utils.comm as comm
import numpy as np
from detectron2.data import MetadataCatalog
from detectron2.data.datasets.coco import convert_to_coco_json
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils.file_io import PathManager
from scipy.stats import spearmanr
from tabulate import tabulate

from ..modeling import candidates as candidate_recording
from .coco_ap import coco_box_ap, load_coco

__all__ = [
    "CorrelationEvaluator",
    "RESULTS_FILE",
    "box_iou",
    "spearman",
    "greedy_match",
    "permute_scores_by_iou",
]

logger = logging.getLogger(__name__)

RESULTS_FILE = "correlation_evaluation.json"
TASK = "correlation"


def box_iou(boxes1: np.ndarray, boxes2: np.ndarray) -> np.ndarray:
    """(N, 4) x (M, 4) XYXY boxes -> (N, M) IoU."""
    top_left = np.maximum(boxes1[:, None, :2], boxes2[None, :, :2])
    bottom_right = np.minimum(boxes1[:, None, 2:], boxes2[None, :, 2:])
    intersection = np.prod(np.clip(bottom_right - top_left, 0, None), axis=2)
    area1 = np.prod(boxes1[:, 2:] - boxes1[:, :2], axis=1)
    area2 = np.prod(boxes2[:, 2:] - boxes2[:, :2], axis=1)
    union = area1[:, None] + area2[None, :] - intersection
    return np.divide(intersection, union, out=np.zeros_like(intersection), where=union > 0)


def spearman(scores: np.ndarray, ious: np.ndarray) -> float:
    """Spearman's ρ (scipy); NaN for fewer than two samples or a constant input, where it is
    undefined."""
    if len(scores) < 2 or np.ptp(scores) == 0 or np.ptp(ious) == 0:
        return float("nan")
    return float(spearmanr(scores, ious)[0])


def greedy_match(ious: np.ndarray, iou_threshold: float) -> np.ndarray:
    """COCO's matching of one image and class at one IoU threshold.

    Args:
        ious: (D, G) IoU of the detections, sorted by decreasing score, with the non-crowd ground
            truths.
    Returns:
        (D,) index of the ground truth each detection matches (a true positive), -1 for none.
        Each detection in turn takes the unmatched ground truth of highest IoU ≥ the threshold.
    """
    matched = np.full(len(ious), -1, dtype=np.int64)
    taken = np.zeros(ious.shape[1], dtype=bool)
    for d, row in enumerate(ious):
        eligible = np.where(taken, -1.0, row)
        g = int(np.argmax(eligible)) if len(eligible) else -1
        if g >= 0 and eligible[g] >= iou_threshold:
            matched[d], taken[g] = g, True
    return matched


def permute_scores_by_iou(
    scores: np.ndarray,
    tp_index: np.ndarray,
    tp_iou: np.ndarray,
    tp_class: np.ndarray,
    increasing_with_iou: bool,
) -> np.ndarray:
    """The AP bounds' detections: within each class, the true positives' scores permuted among
    them so that they sort in the order of their IoU (``increasing_with_iou``, the upper bound)
    or opposite to it (lower bound). Everything else keeps its score.

    Args:
        scores: (D,) all detections. tp_index, tp_iou, tp_class: (P,) the true positives.
    Returns:
        (D,) new scores.
    """
    permuted = scores.copy()
    for c in np.unique(tp_class):
        members = tp_index[tp_class == c]
        ious = tp_iou[tp_class == c]
        by_iou = np.argsort(-ious if increasing_with_iou else ious, kind="stable")
        permuted[members[by_iou]] = np.sort(scores[members])[::-1]
    return permuted


class CorrelationEvaluator(DatasetEvaluator):
    """Reports, under the task ``"correlation"``:

    - ``image_level_rho``: per image, ρ between the scores and IoUs of its positive pre-NMS
      candidates (IoU ≥ ``iou_threshold`` with a ground truth of their class; IoU = the highest
      such), averaged over the images where it is defined (≥ 2 positives, non-constant values).
    - ``class_level_rho``: per class, ρ between the scores and IoUs of the true positives of the
      final detections (COCO matching at ``iou_threshold``, top ``max_detections`` per image and
      class), pooled over the dataset, averaged over the classes where it is defined.
    - ``ap``, ``ap_lower_bound``, ``ap_upper_bound``: COCO AP of the final detections, and with
      each class's true-positive scores permuted to sort opposite to / in the order of IoU (bounds
      of AP at ``iou_threshold``; COCO AP's greedy matching at stricter IoUs can then pair other
      detections, so AP may fall slightly outside them, as an NMS-free detector's duplicates do).
    - ``br_recall@N``: for each non-crowd ground truth, its best-regressed candidate (highest IoU
      among the candidates of its class; none if no candidate overlaps it); the fraction of ground
      truths whose best-regressed candidate's score is among the top N of its image (ties count as
      inside).

    Candidates are ``outputs[i]["candidates"]`` where the model gives them, else
    ``outputs[i]["instances"]`` (:mod:`corrloss_d2.modeling.candidates`). Per-class values,
    counts and the true positives' (score, IoU, class) go to
    ``output_dir/correlation_evaluation.json``.
    """

    def __init__(
        self,
        dataset_name: str,
        distributed: bool = True,
        output_dir: Optional[str] = None,
        *,
        iou_threshold: float = 0.5,
        top_n: Sequence[int] = (10, 100),
        max_detections: int = 100,
    ):
        """
        Args:
            dataset_name: a registered COCO-format dataset (metadata ``json_file``, else converted
                from its dataset dicts like :class:`COCOEvaluator` does).
            distributed: gather all processes' results to the main process.
            output_dir: where the JSON file goes (None: not written).
            iou_threshold: IoU of a positive / true positive.
            top_n: the N of ``br_recall@N``.
            max_detections: per image and class, as COCO's maxDets.
        """
        self._dataset_name = dataset_name
        self._distributed = distributed
        self._output_dir = output_dir
        self._iou_threshold = iou_threshold
        self._top_n = tuple(top_n)
        self._max_detections = max_detections
        metadata = MetadataCatalog.get(dataset_name)
        json_file = metadata.get("json_file")
        if json_file is None:
            if output_dir is None:
                raise ValueError(
                    f"dataset {dataset_name!r} has no json_file in its metadata; give "
                    "an output_dir to convert it to COCO json into"
                )
            json_file = os.path.join(output_dir, f"{dataset_name}_coco_format.json")
            convert_to_coco_json(dataset_name, json_file)
        self._coco = load_coco(PathManager.get_local_path(json_file))
        category_ids = sorted(c["id"] for c in self._coco.dataset["categories"])
        # detectron2's mapping (load_coco_json sets it; it sorts the ids the same way).
        to_contiguous = metadata.get(
            "thing_dataset_id_to_contiguous_id", {cid: i for i, cid in enumerate(category_ids)}
        )
        self._category_id_of = {v: k for k, v in to_contiguous.items()}
        self._class_names = metadata.get(
            "thing_classes", [str(cid) for cid in sorted(to_contiguous)]
        )
        self._ground_truth = self._index_ground_truth(to_contiguous)
        self._records: List[Dict] = []

    def _index_ground_truth(self, to_contiguous: Dict[int, int]) -> Dict[int, Tuple]:
        """image id -> (boxes (G, 4) XYXY, classes (G,), crowd (G,) bool)."""
        per_image = {image["id"]: [] for image in self._coco.dataset["images"]}
        for ann in self._coco.dataset["annotations"]:
            x, y, w, h = ann["bbox"]
            per_image[ann["image_id"]].append(
                (x, y, x + w, y + h, to_contiguous[ann["category_id"]], ann.get("iscrowd", 0))
            )
        index = {}
        for image_id, rows in per_image.items():
            table = np.array(rows, dtype=np.float64).reshape(-1, 6)
            index[image_id] = (table[:, :4], table[:, 4].astype(np.int64), table[:, 5] > 0)
        return index

    def reset(self):
        self._records = []
        candidate_recording.start_recording(self)

    def process(self, inputs, outputs):
        for inputs_per_image, output in zip(inputs, outputs):
            image_id = inputs_per_image["image_id"]
            gt_boxes, gt_classes, gt_crowd = self._ground_truth[image_id]
            keep = ~gt_crowd
            gt_boxes, gt_classes = gt_boxes[keep], gt_classes[keep]
            instances = output["instances"].to("cpu")
            candidates = output.get(candidate_recording.CANDIDATES_KEY, instances).to("cpu")
            record = self._candidate_measures(candidates, gt_boxes, gt_classes)
            record.update(
                image_id=image_id,
                boxes=instances.pred_boxes.tensor.numpy().astype(np.float64),
                scores=instances.scores.numpy().astype(np.float64),
                classes=instances.pred_classes.numpy().astype(np.int64),
            )
            self._records.append(record)

    def _candidate_measures(self, candidates, gt_boxes: np.ndarray, gt_classes: np.ndarray) -> Dict:
        """One image's ρ over its positive candidates and its best-regressed hits per N."""
        boxes = candidates.pred_boxes.tensor.numpy().astype(np.float64)
        scores = candidates.scores.numpy().astype(np.float64)
        classes = candidates.pred_classes.numpy()
        same_class = classes[:, None] == gt_classes[None, :]
        ious = box_iou(boxes, gt_boxes) * same_class  # (C, G), 0 across classes
        best_iou = ious.max(axis=1) if ious.size else np.zeros(len(boxes))
        positive = best_iou >= self._iou_threshold
        hits = [0] * len(self._top_n)
        if ious.size:
            best_regressed = ious.argmax(axis=0)  # (G,)
            covered = ious.max(axis=0) > 0
            rank = (scores[None, :] > scores[best_regressed][:, None]).sum(axis=1)
            hits = [int((covered & (rank < n)).sum()) for n in self._top_n]
        return {
            "image_rho": spearman(scores[positive], best_iou[positive]),
            "num_positives": int(positive.sum()),
            "num_gt": len(gt_boxes),
            "br_hits": hits,
        }

    def evaluate(self):
        candidate_recording.stop_recording(self)
        if self._distributed:
            comm.synchronize()
            records = list(itertools.chain(*comm.gather(self._records, dst=0)))
            if not comm.is_main_process():
                return {}
        else:
            records = self._records
        if not records:
            logger.warning("[CorrelationEvaluator] did not receive valid predictions.")
            return {}
        return self._summarize(records)

    def _true_positives(self, records: List[Dict]):
        """COCO true positives of the final detections: (index into the concatenated detections,
        IoU, class) arrays."""
        tp_index, tp_iou, tp_class = [], [], []
        offset = 0
        for record in records:
            gt_boxes, gt_classes, gt_crowd = self._ground_truth[record["image_id"]]
            for c in np.unique(record["classes"]):
                members = np.flatnonzero(record["classes"] == c)
                members = members[np.argsort(-record["scores"][members], kind="mergesort")]
                members = members[: self._max_detections]
                gt_of_class = (gt_classes == c) & ~gt_crowd
                ious = box_iou(record["boxes"][members], gt_boxes[gt_of_class])
                matched = greedy_match(ious, self._iou_threshold)
                is_tp = matched >= 0
                tp_index.append(offset + members[is_tp])
                tp_iou.append(ious[is_tp, matched[is_tp]])
                tp_class.append(np.full(int(is_tp.sum()), c))
            offset += len(record["scores"])
        empty = [np.zeros(0, dtype=np.int64)]
        return (
            np.concatenate(tp_index + empty),
            np.concatenate(tp_iou + [np.zeros(0)]),
            np.concatenate(tp_class + empty),
        )

    def _coco_detections(self, records: List[Dict], scores: np.ndarray) -> List[Dict]:
        detections, offset = [], 0
        for record in records:
            for box, c, k in zip(record["boxes"], record["classes"], itertools.count(offset)):
                x0, y0, x1, y1 = box.tolist()
                detections.append(
                    {
                        "image_id": record["image_id"],
                        "category_id": self._category_id_of[int(c)],
                        "bbox": [x0, y0, x1 - x0, y1 - y0],
                        "score": float(scores[k]),
                    }
                )
            offset += len(record["scores"])
        return detections

    def _summarize(self, records: List[Dict]) -> Dict:
        records = sorted(records, key=lambda r: r["image_id"])  # same order whatever the gathering
        image_rhos = np.array([r["image_rho"] for r in records])
        scores = np.concatenate([r["scores"] for r in records] + [np.zeros(0)])
        tp_index, tp_iou, tp_class = self._true_positives(records)
        per_class = []
        for c, name in enumerate(self._class_names):
            in_class = tp_class == c
            per_class.append(
                {
                    "class": name,
                    "rho": spearman(scores[tp_index[in_class]], tp_iou[in_class]),
                    "num_true_positives": int(in_class.sum()),
                }
            )
        class_rhos = np.array([p["rho"] for p in per_class])
        detections = self._coco_detections(records, scores)
        ap = {"ap": coco_box_ap(self._coco, detections)}
        for key, increasing in (("ap_lower_bound", False), ("ap_upper_bound", True)):
            permuted = permute_scores_by_iou(scores, tp_index, tp_iou, tp_class, increasing)
            for detection, score in zip(detections, permuted):
                detection["score"] = float(score)
            ap[key] = coco_box_ap(self._coco, detections)
        num_gt = sum(r["num_gt"] for r in records)
        metrics = {
            "image_level_rho": _nanmean(image_rhos),
            "class_level_rho": _nanmean(class_rhos),
            **ap,
        }
        for i, n in enumerate(self._top_n):
            metrics[f"br_recall@{n}"] = sum(r["br_hits"][i] for r in records) / max(num_gt, 1)
        counts = {
            "images": len(records),
            "images_with_image_level_rho": int(np.isfinite(image_rhos).sum()),
            "ground_truths": num_gt,
            "true_positives": len(tp_index),
        }
        self._log(metrics, per_class, counts)
        if self._output_dir:
            self._write(metrics, per_class, counts, scores[tp_index], tp_iou, tp_class)
        return OrderedDict({TASK: metrics})

    def _log(self, metrics: Dict, per_class: List[Dict], counts: Dict) -> None:
        rows = [(p["class"], f"{p['rho']:.4f}", p["num_true_positives"]) for p in per_class]
        logger.info(
            "Correlation of score and IoU per class (true positives at IoU %.2f), %s:\n%s",
            self._iou_threshold,
            counts,
            tabulate(rows, headers=["class", "rho", "true positives"], tablefmt="pipe"),
        )

    def _write(self, metrics, per_class, counts, tp_scores, tp_iou, tp_class) -> None:
        PathManager.mkdirs(self._output_dir)
        content = {
            "dataset": self._dataset_name,
            "iou_threshold": self._iou_threshold,
            "metrics": metrics,
            "counts": counts,
            "per_class": per_class,
            "true_positives": {
                "score": tp_scores.tolist(),
                "iou": tp_iou.tolist(),
                "class": tp_class.tolist(),
            },
        }
        path = os.path.join(self._output_dir, RESULTS_FILE)
        with PathManager.open(path, "w") as f:
            json.dump(_nan_to_none(content), f)
        logger.info("Correlation evaluation written to %s", path)


def _nanmean(values: np.ndarray) -> float:
    """Mean of the finite values; NaN when there are none."""
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if len(finite) else float("nan")


def _nan_to_none(value):
    """JSON has no NaN: undefined values are written as null."""
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_nan_to_none(v) for v in value]
    return value
