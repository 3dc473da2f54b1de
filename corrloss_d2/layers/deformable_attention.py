"""Multi-scale deformable attention (Zhu et al., "Deformable DETR", ICLR 2021) in plain PyTorch:
each query attends to a few sampled points per head and feature level, at learned offsets from
its reference point, instead of to every position. Runs on the CPU and on CUDA without a
compiled extension (bilinear sampling by ``torch.nn.functional.grid_sample``)."""

import math
from typing import Optional

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["multi_scale_deformable_attention", "MultiScaleDeformableAttention"]


def _check_shapes(value, spatial_shapes, sampling_locations, attention_weights) -> None:
    if value.dim() != 4:
        raise ValueError(f"value must be (N, S, M, D), got shape {tuple(value.shape)}")
    n, s, m, _ = value.shape
    if spatial_shapes.dim() != 2 or spatial_shapes.shape[1] != 2:
        raise ValueError(
            f"spatial_shapes must be (L, 2) (height, width), got {tuple(spatial_shapes.shape)}"
        )
    levels = spatial_shapes.shape[0]
    if int(spatial_shapes.prod(dim=1).sum()) != s:
        raise ValueError(
            f"spatial_shapes {spatial_shapes.tolist()} cover "
            f"{int(spatial_shapes.prod(dim=1).sum())} positions, but value has S = {s}"
        )
    if sampling_locations.dim() != 6 or sampling_locations.shape[-1] != 2:
        raise ValueError(
            f"sampling_locations must be (N, Lq, M, L, P, 2), got {tuple(sampling_locations.shape)}"
        )
    if (sampling_locations.shape[0], sampling_locations.shape[2:4]) != (n, (m, levels)):
        raise ValueError(
            f"sampling_locations {tuple(sampling_locations.shape)} do not match N = {n}, "
            f"M = {m}, L = {levels}"
        )
    if attention_weights.shape != sampling_locations.shape[:-1]:
        raise ValueError(
            f"attention_weights must be {tuple(sampling_locations.shape[:-1])} (N, Lq, M, L, P), "
            f"got {tuple(attention_weights.shape)}"
        )


def multi_scale_deformable_attention(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """The attention-weighted sum of bilinearly sampled values.

    Args:
        value: (N, S, M, D) values of M heads of D channels at the S positions of all levels,
            each level flattened row-major and the levels concatenated in order.
        spatial_shapes: (L, 2) int64 (height, width) of each level; their areas sum to S.
        sampling_locations: (N, Lq, M, L, P, 2) normalised (x, y) of P points per query, head and
            level: 0 and 1 are the map's outer edges, pixel i's centre is at (i + 0.5) / width.
        attention_weights: (N, Lq, M, L, P) weight of each sampled point (the caller normalises
            them, typically a softmax over L·P).

    Returns:
        (N, Lq, M·D): per query, the heads' weighted sums, concatenated head by head. A point
        outside a map samples zeros there (bilinear sampling with zero padding).
    """
    _check_shapes(value, spatial_shapes, sampling_locations, attention_weights)
    batch, _, heads, channels = value.shape
    _, queries, _, levels, points, _ = sampling_locations.shape
    shapes = [(int(h), int(w)) for h, w in spatial_shapes.tolist()]
    per_level = value.split([h * w for h, w in shapes], dim=1)
    # grid_sample's grid: -1 and 1 are the outer edges (align_corners=False), as here 0 and 1.
    grids = 2 * sampling_locations - 1
    sampled = []
    for level, (height, width) in enumerate(shapes):
        maps = per_level[level].permute(0, 2, 3, 1).reshape(batch * heads, channels, height, width)
        grid = grids[:, :, :, level].transpose(1, 2).reshape(batch * heads, queries, points, 2)
        sampled.append(
            F.grid_sample(maps, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        )  # (N·M, D, Lq, P)
    weights = attention_weights.transpose(1, 2).reshape(batch * heads, 1, queries, levels * points)
    summed = (torch.cat(sampled, dim=-1) * weights).sum(dim=-1)  # (N·M, D, Lq)
    return summed.view(batch, heads * channels, queries).transpose(1, 2)


class MultiScaleDeformableAttention(nn.Module):
    """Deformable attention of queries to a multi-level feature map: per head, level and point,
    a sampling offset and an attention weight predicted from the query (softmax over a head's
    levels and points), values from a linear projection of the map, an output projection.

    Offsets start at zero with biases that spread each head's points along its own direction
    (point p at distance p + 1), and attention weights start uniform (as Deformable DETR
    initialises them).
    """

    def __init__(
        self,
        embed_dim: int = 256,
        num_heads: int = 8,
        num_levels: int = 4,
        num_points: int = 4,
    ):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} must be a multiple of num_heads {num_heads}")
        self.embed_dim, self.num_heads = embed_dim, num_heads
        self.num_levels, self.num_points = num_levels, num_points
        self.sampling_offsets = nn.Linear(embed_dim, num_heads * num_levels * num_points * 2)
        self.attention_weights = nn.Linear(embed_dim, num_heads * num_levels * num_points)
        self.value_proj = nn.Linear(embed_dim, embed_dim)
        self.output_proj = nn.Linear(embed_dim, embed_dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.sampling_offsets.weight)
        angles = torch.arange(self.num_heads, dtype=torch.float32) * (2 * math.pi / self.num_heads)
        directions = torch.stack([angles.cos(), angles.sin()], dim=-1)
        # The larger coordinate of each direction becomes 1: points on the square around the
        # reference point, then further out by point index.
        directions = directions / directions.abs().max(dim=-1, keepdim=True).values
        distances = torch.arange(1, self.num_points + 1, dtype=torch.float32)
        bias = directions[:, None, None, :] * distances[None, None, :, None]
        bias = bias.expand(self.num_heads, self.num_levels, self.num_points, 2)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(bias.reshape(-1))
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        for layer in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(
        self,
        query: torch.Tensor,
        reference_points: torch.Tensor,
        value: torch.Tensor,
        spatial_shapes: torch.Tensor,
        value_padding_mask: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """
        Args:
            query: (N, Lq, C) queries (position embeddings already added, as the caller wants).
            reference_points: (N, Lq, L, 2) normalised (x, y) per level, offsets then counted in
                pixels of each level; or (N, Lq, L, 4) normalised (cx, cy, w, h) boxes, offsets
                then counted in halves of the box over the number of points.
            value: (N, S, C) the flattened maps of all levels (see
                :func:`multi_scale_deformable_attention`).
            spatial_shapes: (L, 2) int64 (height, width) per level.
            value_padding_mask: (N, S) bool, True at padded positions (their values are zeroed).
        Returns:
            (N, Lq, C).
        """
        batch, queries, _ = query.shape
        heads, levels, points = self.num_heads, self.num_levels, self.num_points
        if spatial_shapes.shape[0] != levels or reference_points.shape[2] != levels:
            raise ValueError(
                f"this attention has {levels} levels; spatial_shapes has "
                f"{spatial_shapes.shape[0]} and reference_points {reference_points.shape[2]}"
            )
        projected = self.value_proj(value)
        if value_padding_mask is not None:
            projected = projected.masked_fill(value_padding_mask[..., None], 0.0)
        projected = projected.view(batch, -1, heads, self.embed_dim // heads)
        offsets = self.sampling_offsets(query).view(batch, queries, heads, levels, points, 2)
        weights = self.attention_weights(query).view(batch, queries, heads, levels * points)
        weights = weights.softmax(dim=-1).view(batch, queries, heads, levels, points)
        if reference_points.shape[-1] == 2:
            width_height = spatial_shapes.flip(-1).to(offsets.dtype)  # (L, 2) as (x, y) sizes
            locations = (
                reference_points[:, :, None, :, None, :]
                + offsets / width_height[None, None, None, :, None, :]
            )
        elif reference_points.shape[-1] == 4:
            centers, sizes = reference_points[..., :2], reference_points[..., 2:]
            locations = (
                centers[:, :, None, :, None, :]
                + offsets / points * sizes[:, :, None, :, None, :] * 0.5
            )
        else:
            raise ValueError(
                "reference_points must end in 2 (points) or 4 (boxes), got shape "
                f"{tuple(reference_points.shape)}"
            )
        attended = multi_scale_deformable_attention(projected, spatial_shapes, locations, weights)
        return self.output_proj(attended)
