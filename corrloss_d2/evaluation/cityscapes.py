"""Cityscapes evaluation: COCO-style box AP over the 8 instance classes (the papers' protocol) and
the official instance-level evaluation of ``cityscapesscripts``
(``evalInstanceLevelSemanticLabeling``).

The official script is run as installed, with three problems of its 2.3.0 release kept away:
it writes ``matches.json`` into the current directory and caches the ground truth in
``gtInstances.json`` beside its own module (a stale cache silently evaluates old ground truth),
and on numpy >= 2 its json writer fails on numpy integers while numpy 2.4 removed the ``np.in1d``
it calls. Each evaluation runs in a fresh temporary folder that holds the predictions, the cache
and ``matches.json``; numpy and the json writer are replaced in the toolkit module's namespace
for the duration of the call only.
"""

import copy
import functools
import itertools
import json
import logging
import os
import tempfile
import types
from typing import Iterator, List, Optional, Sequence
from unittest import mock

import numpy as np
import pycocotools.mask as mask_util
from cityscapesscripts.evaluation import evalInstanceLevelSemanticLabeling as instance_level_eval
from cityscapesscripts.helpers.labels import name2label
from detectron2.data import MetadataCatalog
from detectron2.data.datasets.coco import convert_to_coco_json
from detectron2.evaluation import DatasetEvaluator, DatasetEvaluators
from detectron2.utils import comm
from PIL import Image

from ..data.cityscapes import cityscapes_gt_file
from .box import build_box_evaluator, inference_folder

__all__ = [
    "CityscapesInstanceLevelEvaluator",
    "box_filled_mask",
    "build_cityscapes_evaluator",
    "run_instance_level_evaluation",
]

logger = logging.getLogger(__name__)


class _NumpyWithIn1d(types.ModuleType):
    """numpy as the toolkit calls it: every attribute of numpy, plus ``in1d`` (removed in 2.4)."""

    def __getattr__(self, name):
        return getattr(np, name)

    @staticmethod
    def in1d(values, test_values, invert=False):
        # in1d is isin flattened, its documented replacement.
        return np.isin(values, test_values, invert=invert).ravel()


_NUMPY_WITH_IN1D = _NumpyWithIn1d("numpy")


def _to_json(value):
    if isinstance(value, np.generic):  # numpy >= 2 scalars have no __dict__ to fall back on
        return value.item()
    return value.__dict__  # the toolkit's own objects, as its writeDict2JSON writes them


def _write_json(work_dir: str, data, file_name: str) -> None:
    """The toolkit's ``writeDict2JSON`` with relative names (its ``matches.json``) in ``work_dir``
    instead of the current directory, and numpy scalars written as numbers."""
    with open(os.path.join(work_dir, file_name), "w") as f:
        json.dump(data, f, default=_to_json, sort_keys=True, indent=4)


def run_instance_level_evaluation(
    prediction_files: Sequence[str],
    gt_files: Sequence[str],
    work_dir: str,
    export_file: Optional[str] = None,
) -> dict:
    """Runs the toolkit's ``evaluateImgLists`` with its default parameters (overlaps 0.5:0.95,
    minimum region 100 pixels), on numpy 1.x and 2.x, writing only in ``work_dir`` and
    ``export_file``.

    Args:
        prediction_files: per image, a text file inside ``work_dir`` with one line
            ``<mask png, relative to the file> <label id> <score>`` per predicted instance.
        gt_files: per image, in the same order, its ``*_gtFine_instanceIds.png``.
        work_dir: folder of the predictions; the toolkit's ground-truth cache ``gtInstances.json``
            and ``matches.json`` go there. Use a new folder per evaluation so the cache is never
            stale.
        export_file: where the toolkit writes its full result json; None: not written.

    Returns:
        the toolkit's result dict; ``averages`` holds ``allAp``, ``allAp50%`` and per class
        ``classes[name]["ap"]``, ``["ap50%"]``, in [0, 1] (NaN for a class without ground truth).
    """
    args = copy.deepcopy(instance_level_eval.args)  # the official thresholds
    args.predictionPath = os.path.abspath(work_dir)
    args.gtInstancesFile = os.path.join(args.predictionPath, "gtInstances.json")
    args.JSONOutput = export_file is not None
    args.exportFile = export_file
    args.quiet = True
    with mock.patch.multiple(
        instance_level_eval,
        np=_NUMPY_WITH_IN1D,
        writeDict2JSON=functools.partial(_write_json, args.predictionPath),
    ):
        return instance_level_eval.evaluateImgLists(list(prediction_files), list(gt_files), args)


def box_filled_mask(box: Sequence[float], height: int, width: int) -> np.ndarray:
    """(height, width) uint8 mask, 1 at the pixels whose centres lie inside ``box`` (x0, y0, x1, y1
    in detectron2's pixel-edge coordinates): integer corners cover exactly [x0, x1) x [y0, y1)."""
    x0, y0, x1, y1 = (max(int(np.floor(v + 0.5)), 0) for v in box)
    mask = np.zeros((height, width), np.uint8)
    mask[y0:y1, x0:x1] = 1
    return mask


class CityscapesInstanceLevelEvaluator(DatasetEvaluator):
    """The official Cityscapes instance-level evaluation (mask AP over IoU 0.5:0.95, and AP50) of
    detectron2 outputs: on the model's ``pred_masks`` when every output has them, otherwise on
    masks filled from ``pred_boxes`` (the official score of a box detector).

    ``evaluate()`` returns, on the main process, ``{"cityscapes_official_mask" or
    "cityscapes_official_boxmask": {"AP", "AP50", "AP-<class>", "AP50-<class>"}}`` in percent
    (NaN for a class without ground truth), and ``{}`` elsewhere. Predictions of all processes
    are gathered to the main process and evaluated there. The processed images are evaluated, as
    COCOEvaluator does: an image without detections counts its ground truth as missed.
    """

    def __init__(self, dataset_name: str, output_dir: Optional[str] = None):
        """
        Args:
            dataset_name: a dataset registered by ``register_cityscapes_detection`` (its metadata
                ``gt_dir`` and ``thing_classes``).
            output_dir: where the toolkit's full result json is written
                (``cityscapes_official_<mask|boxmask>.json``); None: not written.
        """
        metadata = MetadataCatalog.get(dataset_name)
        self._gt_dir = metadata.gt_dir
        self._label_ids = [name2label[name].id for name in metadata.thing_classes]
        self._output_dir = output_dir
        self._predictions: List[dict] = []

    def reset(self):
        self._predictions = []

    def process(self, inputs, outputs):
        for input, output in zip(inputs, outputs):
            instances = output["instances"].to("cpu")
            label_ids = [self._label_ids[c] for c in instances.pred_classes.tolist()]
            prediction = {
                "file_name": input["file_name"],
                "height": input["height"],
                "width": input["width"],
                "boxes": instances.pred_boxes.tensor.tolist(),
                "scores": instances.scores.tolist(),
                "label_ids": label_ids,
            }
            if instances.has("pred_masks"):  # run-length encoded: a small record to gather
                prediction["masks"] = [
                    mask_util.encode(np.asfortranarray(m))
                    for m in instances.pred_masks.numpy().astype(np.uint8)
                ]
            self._predictions.append(prediction)

    def evaluate(self):
        comm.synchronize()
        predictions = list(itertools.chain(*comm.gather(self._predictions, dst=0)))
        if not comm.is_main_process():
            return {}
        if not predictions:
            logger.warning("CityscapesInstanceLevelEvaluator got no outputs; nothing to evaluate.")
            return {}
        use_masks = all("masks" in p for p in predictions)
        key = "cityscapes_official_" + ("mask" if use_masks else "boxmask")
        gt_files = [
            cityscapes_gt_file(self._gt_dir, p["file_name"], "gtFine_instanceIds.png")
            for p in predictions
        ]
        _check_ground_truth(gt_files, predictions)
        export_file = os.path.join(self._output_dir, key + ".json") if self._output_dir else None
        with tempfile.TemporaryDirectory(prefix="corrloss_cityscapes_eval_") as work_dir:
            prediction_files = [
                _write_prediction(p, os.path.join(work_dir, f"image{i:06d}"), use_masks)
                for i, p in enumerate(predictions)
            ]
            averages = run_instance_level_evaluation(
                prediction_files, gt_files, work_dir, export_file
            )["averages"]
        metrics = {"AP": 100 * float(averages["allAp"]), "AP50": 100 * float(averages["allAp50%"])}
        for name, class_averages in averages["classes"].items():
            metrics[f"AP-{name}"] = 100 * float(class_averages["ap"])
            metrics[f"AP50-{name}"] = 100 * float(class_averages["ap50%"])
        logger.info(f"Official Cityscapes instance-level evaluation ({key}): {metrics}")
        return {key: metrics}


def _check_ground_truth(gt_files: Sequence[str], predictions: Sequence[dict]) -> None:
    """The toolkit compares each predicted mask with its instanceIds image pixel by pixel."""
    missing = [f for f in gt_files if not os.path.isfile(f)]
    if missing:
        raise FileNotFoundError(
            f"the official Cityscapes evaluation needs *_gtFine_instanceIds.png beside the "
            f"polygons; {len(missing)} are missing, e.g. {missing[0]}. They come with the "
            "gtFine package of the Cityscapes download."
        )
    for gt_file, prediction in zip(gt_files, predictions):
        with Image.open(gt_file) as gt_image:  # reads the header only
            if gt_image.size != (prediction["width"], prediction["height"]):
                raise ValueError(
                    f"{prediction['file_name']} was evaluated at height x width "
                    f"{prediction['height']} x {prediction['width']}, its ground truth "
                    f"{gt_file} is {gt_image.height} x {gt_image.width}: pass the original "
                    "image size as the input's height and width."
                )


def _instance_masks(prediction: dict, use_masks: bool) -> Iterator[np.ndarray]:
    if use_masks:
        return (mask_util.decode(rle) for rle in prediction["masks"])
    return (
        box_filled_mask(box, prediction["height"], prediction["width"])
        for box in prediction["boxes"]
    )


def _write_prediction(prediction: dict, prefix: str, use_masks: bool) -> str:
    """Writes one image's instances in the toolkit's format: ``<prefix>_<k>.png`` masks and the
    text file ``<prefix>.txt`` listing them (an empty file, no empty line, without detections).
    Returns the text file."""
    lines = []
    masks = _instance_masks(prediction, use_masks)
    for k, (mask, label_id, score) in enumerate(
        zip(masks, prediction["label_ids"], prediction["scores"])
    ):
        mask_file = f"{prefix}_{k}.png"
        Image.fromarray(mask * 255).save(mask_file)
        lines.append(f"{os.path.basename(mask_file)} {label_id} {score}\n")
    with open(prefix + ".txt", "w") as f:
        f.writelines(lines)
    return prefix + ".txt"


def build_cityscapes_evaluator(
    cfg, dataset_name: str, output_folder: Optional[str] = None
) -> DatasetEvaluators:
    """COCO-style box AP over the 8 classes (results key ``bbox``) and the official instance-level
    evaluation (``cityscapes_official_mask`` or ``cityscapes_official_boxmask``)."""
    output_folder = inference_folder(cfg, dataset_name, output_folder)
    # COCOEvaluator converts a dataset once per process and keeps reading that file (its path
    # stays in the metadata): convert again for every evaluator so changed ground truth is seen.
    metadata = MetadataCatalog.get(dataset_name)
    metadata.json_file = metadata.get("json_file", None) or os.path.join(
        output_folder, f"{dataset_name}_coco_format.json"
    )
    convert_to_coco_json(dataset_name, metadata.json_file, allow_cached=False)
    return DatasetEvaluators(
        [
            build_box_evaluator(cfg, dataset_name, output_folder),
            CityscapesInstanceLevelEvaluator(dataset_name, output_folder),
        ]
    )
