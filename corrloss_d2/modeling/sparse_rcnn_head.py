"""Sparse R-CNN's iterative head (Sun et al., CVPR 2021): one stage of self-attention over the
proposals, dynamic instance interaction with their RoI features and an FFN, predicting class
logits and refined boxes.

Conventions: B images, N learnable proposals, K classes, S RoIAlign resolution, d hidden width.
Boxes are XYXY in the pixels of the (resized) input image unless a name says otherwise.
"""

import math
from typing import Tuple

import torch
from detectron2.modeling.box_regression import Box2BoxTransform
from torch import nn
from torch.nn import functional as F

__all__ = ["DynamicInstanceInteraction", "SparseRCNNStage", "BOX_DELTA_WEIGHTS"]

# Sparse R-CNN decodes box deltas with these weights (dx, dy, dw, dh).
BOX_DELTA_WEIGHTS = (2.0, 2.0, 1.0, 1.0)


def _linear_norm_relu_layers(width: int, count: int) -> nn.Sequential:
    layers = []
    for _ in range(count):
        layers += [nn.Linear(width, width, bias=False), nn.LayerNorm(width), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class DynamicInstanceInteraction(nn.Module):
    """Sparse R-CNN's dynamic instance interaction: each proposal's feature generates the weights
    of ``num_dynamic`` 1×1 layers (d → dim_dynamic → … → d) applied to its own RoI feature, which
    is then flattened and projected back to d."""

    def __init__(
        self, *, hidden_dim: int, dim_dynamic: int, num_dynamic: int, pooler_resolution: int
    ):
        super().__init__()
        widths = [hidden_dim] + [dim_dynamic] * (num_dynamic - 1) + [hidden_dim]
        self.layer_shapes = list(zip(widths[:-1], widths[1:]))
        self.parameter_generator = nn.Linear(hidden_dim, sum(a * b for a, b in self.layer_shapes))
        self.norms = nn.ModuleList(nn.LayerNorm(out) for _, out in self.layer_shapes)
        self.out_layer = nn.Linear(hidden_dim * pooler_resolution**2, hidden_dim)
        self.out_norm = nn.LayerNorm(hidden_dim)

    def forward(self, proposal_features: torch.Tensor, roi_features: torch.Tensor) -> torch.Tensor:
        """
        Args:
            proposal_features: (R, d), R = B·N. roi_features: (R, d, S, S).
        Returns:
            (R, d) interaction features.
        """
        x = roi_features.flatten(2).transpose(1, 2)  # (R, S·S, d)
        params = self.parameter_generator(proposal_features)
        offset = 0
        for (fan_in, fan_out), norm in zip(self.layer_shapes, self.norms):
            weight = params[:, offset : offset + fan_in * fan_out].view(-1, fan_in, fan_out)
            offset += fan_in * fan_out
            x = F.relu(norm(torch.bmm(x, weight)))
        return F.relu(self.out_norm(self.out_layer(x.flatten(1))))


class SparseRCNNStage(nn.Module):
    """One iterative head: self-attention over proposals → dynamic instance interaction → FFN →
    class logits and box deltas relative to the stage's input boxes."""

    def __init__(
        self,
        *,
        num_classes: int,
        hidden_dim: int,
        num_heads: int,
        dim_feedforward: int,
        dropout: float,
        dim_dynamic: int,
        num_dynamic: int,
        pooler_resolution: int,
        num_cls_layers: int,
        num_reg_layers: int,
        prior_prob: float,
        box2box_transform: Box2BoxTransform,
    ):
        super().__init__()
        self.self_attention = nn.MultiheadAttention(
            hidden_dim, num_heads, dropout=dropout, batch_first=True
        )
        self.attention_norm = nn.LayerNorm(hidden_dim)
        self.interaction = DynamicInstanceInteraction(
            hidden_dim=hidden_dim,
            dim_dynamic=dim_dynamic,
            num_dynamic=num_dynamic,
            pooler_resolution=pooler_resolution,
        )
        self.interaction_norm = nn.LayerNorm(hidden_dim)
        self.feedforward = nn.Sequential(
            nn.Linear(hidden_dim, dim_feedforward),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(dim_feedforward, hidden_dim),
        )
        self.feedforward_norm = nn.LayerNorm(hidden_dim)
        self.dropout = nn.Dropout(dropout)
        self.cls_tower = _linear_norm_relu_layers(hidden_dim, num_cls_layers)
        self.reg_tower = _linear_norm_relu_layers(hidden_dim, num_reg_layers)
        self.class_logits = nn.Linear(hidden_dim, num_classes)
        self.box_deltas = nn.Linear(hidden_dim, 4)
        self.box2box_transform = box2box_transform
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        nn.init.constant_(self.class_logits.bias, -math.log((1 - prior_prob) / prior_prob))

    def forward(
        self, roi_features: torch.Tensor, proposal_features: torch.Tensor, boxes: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """
        Args:
            roi_features: (B·N, d, S, S) RoIAlign features of ``boxes``, image-major.
            proposal_features: (B, N, d). boxes: (B, N, 4) the stage's input boxes.
        Returns:
            logits (B, N, K), refined boxes (B, N, 4), proposal features for the next stage
            (B, N, d).
        """
        num_images, num_proposals, width = proposal_features.shape
        attended = self.self_attention(
            proposal_features, proposal_features, proposal_features, need_weights=False
        )[0]
        x = self.attention_norm(proposal_features + self.dropout(attended)).reshape(-1, width)
        x = self.interaction_norm(x + self.dropout(self.interaction(x, roi_features)))
        x = self.feedforward_norm(x + self.dropout(self.feedforward(x)))
        logits = self.class_logits(self.cls_tower(x))
        deltas = self.box_deltas(self.reg_tower(x))
        refined = self.box2box_transform.apply_deltas(deltas, boxes.reshape(-1, 4))
        return (
            logits.view(num_images, num_proposals, -1),
            refined.view(num_images, num_proposals, 4),
            x.view(num_images, num_proposals, width),
        )
