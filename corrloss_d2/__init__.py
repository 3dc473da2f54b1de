"""corrloss_d2: correlation-aware losses for Detectron2 detectors.

Importing the package registers its meta-architectures (CorrRetinaNet, CorrFCOS, CorrATSS,
CorrSparseRCNN, CorrDINO, CorrYOLACT), the backbone ``build_fcos_resnet_fpn_backbone`` and its
datasets with detectron2.
"""

from .compiled_ops import register_missing_op_placeholders

register_missing_op_placeholders()  # before detectron2 modules that use the ops are imported

from .config import add_corrloss_config, validate_corrloss_config  # noqa: E402
from .data import register_corrloss_datasets  # noqa: E402
from .modeling import (  # noqa: E402
    CorrATSS,
    CorrDINO,
    CorrelationLoss,
    CorrFCOS,
    CorrRetinaNet,
    CorrSparseRCNN,
    CorrYOLACT,
)

__version__ = "0.1.0"
__all__ = [
    "add_corrloss_config",
    "validate_corrloss_config",
    "register_corrloss_datasets",
    "CorrRetinaNet",
    "CorrFCOS",
    "CorrATSS",
    "CorrSparseRCNN",
    "CorrDINO",
    "CorrYOLACT",
    "CorrelationLoss",
]

register_corrloss_datasets()
