"""corrloss_d2: correlation-aware losses for Detectron2 detectors."""
from .compiled_ops import register_missing_op_placeholders

__version__ = "0.1.0"

register_missing_op_placeholders()
