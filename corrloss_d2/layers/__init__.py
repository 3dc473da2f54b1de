"""Neural-network layers the detectors build on, in plain PyTorch (no compiled extension)."""

from .deformable_attention import MultiScaleDeformableAttention, multi_scale_deformable_attention

__all__ = ["MultiScaleDeformableAttention", "multi_scale_deformable_attention"]
