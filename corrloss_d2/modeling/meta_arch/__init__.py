"""The meta-architectures corrloss_d2 registers with detectron2's META_ARCH_REGISTRY, one module
per family (as detectron2's ``modeling/meta_arch``)."""

from .atss import CorrATSS
from .build import check_model_config
from .dense import CorrelationAwareDenseMixin
from .dino import CorrDINO
from .fcos import CorrFCOS
from .retinanet import CorrRetinaNet
from .sparse_rcnn import CorrSparseRCNN
from .yolact import CorrYOLACT

__all__ = [
    "CorrATSS",
    "CorrDINO",
    "CorrFCOS",
    "CorrRetinaNet",
    "CorrSparseRCNN",
    "CorrYOLACT",
    "CorrelationAwareDenseMixin",
    "check_model_config",
]
