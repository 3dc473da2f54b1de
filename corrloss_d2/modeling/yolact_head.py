"""YOLACT's prediction branches (Bolya et al., ICCV 2019): the shared per-level head (class
scores, box deltas, mask coefficients per anchor), the protonet and the semantic segmentation
branch used only as an auxiliary loss."""

from typing import List, Tuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["YolactHead", "Protonet", "xavier_conv"]


def xavier_conv(in_channels: int, out_channels: int, kernel_size: int) -> nn.Conv2d:
    """A same-padded convolution initialised as the released YOLACT heads (Xavier, zero bias)."""
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
    nn.init.xavier_uniform_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


class YolactHead(nn.Module):
    """One head shared by every FPN level: ``num_convs`` 3x3 conv + ReLU, then 3x3 predictors of
    ``num_anchors`` x (class logits over ``num_classes`` + background, 4 box deltas, and
    ``num_prototypes`` coefficients in (-1, 1) through tanh)."""

    def __init__(
        self,
        *,
        in_channels: int,
        num_anchors: int,
        num_classes: int,
        num_prototypes: int,
        num_convs: int,
    ):
        super().__init__()
        layers = []
        for _ in range(num_convs):
            layers += [xavier_conv(in_channels, in_channels, 3), nn.ReLU(inplace=True)]
        self.tower = nn.Sequential(*layers)
        self.cls_logits = xavier_conv(in_channels, num_anchors * (num_classes + 1), 3)
        self.bbox_pred = xavier_conv(in_channels, num_anchors * 4, 3)
        self.coefficients = xavier_conv(in_channels, num_anchors * num_prototypes, 3)

    def forward(
        self, features: List[torch.Tensor]
    ) -> Tuple[List[torch.Tensor], List[torch.Tensor], List[torch.Tensor]]:
        """
        Args:
            features: per level (N, C, H_l, W_l).
        Returns:
            per level: logits (N, A·(K+1), H_l, W_l), deltas (N, A·4, H_l, W_l) and coefficients
            (N, A·k, H_l, W_l), in detectron2's dense-head layout (anchor-major channels).
        """
        logits, deltas, coefficients = [], [], []
        for feature in features:
            x = self.tower(feature)
            logits.append(self.cls_logits(x))
            deltas.append(self.bbox_pred(x))
            coefficients.append(torch.tanh(self.coefficients(x)))
        return logits, deltas, coefficients


class Protonet(nn.Module):
    """Prototype masks from the finest FPN level: three 3x3 conv + ReLU, a bilinear x2
    upsampling, a 3x3 conv + ReLU and a 1x1 conv to ``num_prototypes`` channels with a final ReLU
    (as released), so the prototypes have twice the resolution of their input."""

    def __init__(self, *, in_channels: int, channels: int, num_prototypes: int):
        super().__init__()
        self.before_upsampling = nn.Sequential(
            xavier_conv(in_channels, channels, 3),
            nn.ReLU(inplace=True),
            xavier_conv(channels, channels, 3),
            nn.ReLU(inplace=True),
            xavier_conv(channels, channels, 3),
            nn.ReLU(inplace=True),
        )
        self.after_upsampling = nn.Sequential(
            xavier_conv(channels, channels, 3),
            nn.ReLU(inplace=True),
            xavier_conv(channels, num_prototypes, 1),
            nn.ReLU(inplace=True),
        )

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, k, 2H, 2W) prototypes."""
        x = self.before_upsampling(feature)
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        return self.after_upsampling(x)
