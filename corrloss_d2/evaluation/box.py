"""COCO-style box AP, and mask AP for mask models, on the datasets corrloss_d2 trains on."""

import os
from typing import Optional

from detectron2.data import MetadataCatalog
from detectron2.evaluation import COCOEvaluator, DatasetEvaluator

from ..compiled_ops import has_compiled_ops
from ..data.cityscapes import CITYSCAPES_EVALUATOR_TYPE

__all__ = ["build_box_evaluator", "inference_folder"]

# Metadata evaluator_type values whose datasets get COCO-style box AP. Cityscapes detection
# datasets (corrloss_d2.data.cityscapes) are converted to COCO format on the fly.
BOX_AP_TYPES = ("coco", CITYSCAPES_EVALUATOR_TYPE)


def inference_folder(cfg, dataset_name: str, output_folder: Optional[str] = None) -> str:
    """``output_folder``, by default detectron2's ``<cfg.OUTPUT_DIR>/inference/<dataset_name>``."""
    return output_folder or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)


def build_box_evaluator(
    cfg, dataset_name: str, output_folder: Optional[str] = None
) -> DatasetEvaluator:
    """COCO box AP (results key ``bbox``) for COCO-format datasets (``register_coco_instances``
    and this package's) and Cityscapes datasets, and mask AP (``segm``) for models with
    MODEL.MASK_ON. Uses detectron2's fast evaluation only where its compiled ops exist
    (pycocotools otherwise)."""
    evaluator_type = MetadataCatalog.get(dataset_name).get("evaluator_type", None)
    if evaluator_type not in BOX_AP_TYPES:
        raise NotImplementedError(
            f"no box evaluator for dataset {dataset_name!r} (evaluator_type={evaluator_type!r}); "
            f"supported evaluator types: {', '.join(BOX_AP_TYPES)}. Register COCO-format data "
            "with detectron2.data.datasets.register_coco_instances; for Cityscapes use "
            "cityscapes_fine_detection_{train,val} (detectron2's own Cityscapes loader fails on "
            "its main branch)."
        )
    # Datasets without a COCO json are converted into the output folder: convert them afresh
    # rather than reuse a json a previous run left there, which may describe other data.
    return COCOEvaluator(
        dataset_name,
        tasks=("bbox", "segm") if cfg.MODEL.MASK_ON else ("bbox",),
        distributed=True,
        output_dir=inference_folder(cfg, dataset_name, output_folder),
        use_fast_impl=has_compiled_ops(),
        allow_cached_coco=False,
    )
