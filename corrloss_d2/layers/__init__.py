"""Neural-network layers the detectors build on, in plain PyTorch (no compiled extension)."""

from .deformable_attention import MultiScaleDeformableAttention, multi_scale_deformable_attention
from .instance_masks import assemble_masks, box_crop_mask, fast_nms

__all__ = [
    "MultiScaleDeformableAttention",
    "assemble_masks",
    "box_crop_mask",
    "fast_nms",
    "multi_scale_deformable_attention",
]
