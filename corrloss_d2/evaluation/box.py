"""Evaluator choice for the datasets corrloss_d2 trains on."""
import os
from typing import Optional

from detectron2.data import MetadataCatalog
from detectron2.evaluation import COCOEvaluator, DatasetEvaluator

from ..compiled_ops import has_compiled_ops

__all__ = ["build_box_evaluator"]

# Metadata evaluator_type values whose datasets get COCO-style box AP. Cityscapes instance
# datasets are converted to COCO format on the fly (mmdetection's Cityscapes box protocol);
# detectron2's CityscapesInstanceEvaluator needs masks, which box detectors do not predict.
BOX_AP_TYPES = ("coco", "cityscapes_instance")


def build_box_evaluator(cfg, dataset_name: str, output_folder: Optional[str] = None) -> DatasetEvaluator:
    """COCO box AP for COCO-format datasets (``register_coco_instances`` and this package's) and
    Cityscapes instance datasets. Uses detectron2's fast evaluation only where its compiled ops
    exist (pycocotools otherwise)."""
    evaluator_type = MetadataCatalog.get(dataset_name).get("evaluator_type", None)
    if evaluator_type not in BOX_AP_TYPES:
        raise NotImplementedError(
            f"no box evaluator for dataset {dataset_name!r} (evaluator_type={evaluator_type!r}); "
            f"supported evaluator types: {', '.join(BOX_AP_TYPES)}. Register COCO-format data "
            "with detectron2.data.datasets.register_coco_instances.")
    output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
    return COCOEvaluator(dataset_name, tasks=("bbox",), distributed=True,
                         output_dir=output_folder, use_fast_impl=has_compiled_ops())
