"""Backbone builders detectron2 lacks in its yaml registry, and the check of a head's inputs."""

from typing import List, Sequence

from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY
from detectron2.modeling.backbone import FPN, build_resnet_backbone
from detectron2.modeling.backbone.fpn import LastLevelP6P7

from ..errors import ConfigError

__all__ = ["build_fcos_resnet_fpn_backbone", "backbone_feature_shapes"]


def backbone_feature_shapes(backbone, in_features: Sequence[str], key: str) -> List[ShapeSpec]:
    """Shapes of the features ``in_features`` (the value of config key ``key``) among the
    backbone's outputs; ConfigError (a ValueError) naming the key when the backbone does not
    produce one."""
    available = backbone.output_shape()
    missing = [f for f in in_features if f not in available]
    if missing:
        raise ConfigError(
            f"cfg.{key} = {list(in_features)} names features {missing} that the "
            f"backbone does not produce (it gives {sorted(available)})"
        )
    return [available[f] for f in in_features]


@BACKBONE_REGISTRY.register()
def build_fcos_resnet_fpn_backbone(cfg, input_shape: ShapeSpec):
    """ResNet-FPN whose P6/P7 are computed from P5 (FCOS), not from C5 (RetinaNet).

    Uses MODEL.RESNETS, MODEL.FPN.{IN_FEATURES, OUT_CHANNELS, NORM, FUSE_TYPE}; outputs p3..p7
    when MODEL.FPN.IN_FEATURES is ["res3", "res4", "res5"].
    """
    out_channels = cfg.MODEL.FPN.OUT_CHANNELS
    return FPN(
        bottom_up=build_resnet_backbone(cfg, input_shape),
        in_features=cfg.MODEL.FPN.IN_FEATURES,
        out_channels=out_channels,
        norm=cfg.MODEL.FPN.NORM,
        top_block=LastLevelP6P7(out_channels, out_channels, in_feature="p5"),
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )
