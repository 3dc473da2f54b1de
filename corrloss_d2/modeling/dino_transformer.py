"""DINO's deformable transformer (Zhang et al., ICLR 2023, on Deformable DETR, Zhu et al., ICLR
2021): a multi-scale deformable encoder, two-stage query selection from the encoder's
proposals, and a decoder that refines boxes layer by layer.

Conventions: B images, L feature levels, S positions of all levels, N matching queries, D
denoising queries, K classes, d hidden width. Boxes are normalised (cx, cy, w, h) of the image
(its unpadded part); "unsigmoided" boxes are their inverse sigmoid.
"""

import math
from typing import List, NamedTuple, Optional, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from ..layers import MultiScaleDeformableAttention

__all__ = [
    "DINOTransformer",
    "EncoderFeatures",
    "TransformerOutput",
    "MLP",
    "box_sine_embedding",
    "inverse_sigmoid",
    "sine_position_embedding",
]


def inverse_sigmoid(x: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """log(x / (1 − x)) with x clamped to [eps, 1 − eps] (DINO's eps): finite for boxes on the
    image border."""
    x = x.clamp(0, 1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))


def _sine_cosine(positions: torch.Tensor, num_feats: int, temperature: float) -> torch.Tensor:
    """(..., num_feats): sin and cos of ``positions`` (...,) at num_feats / 2 frequencies,
    interleaved."""
    exponent = 2 * (torch.arange(num_feats, device=positions.device) // 2) / num_feats
    angles = positions[..., None] / temperature ** exponent.to(positions.dtype)
    return torch.stack([angles[..., 0::2].sin(), angles[..., 1::2].cos()], dim=-1).flatten(-2)


def sine_position_embedding(
    padding_mask: torch.Tensor,
    num_feats: int = 128,
    temperature: float = 10000.0,
    offset: float = -0.5,
) -> torch.Tensor:
    """DETR's sine position embedding of a feature map, normalised to the unpadded part.

    Args:
        padding_mask: (B, H, W) bool, True at padded positions.
    Returns:
        (B, 2·num_feats, H, W): y's embedding then x's, of the pixel-centre coordinates
        ``(i + 1 + offset) / size · 2π``.
    """
    valid = (~padding_mask).to(torch.float32)
    y = valid.cumsum(1)
    x = valid.cumsum(2)
    y = (y + offset) / (y[:, -1:, :] + 1e-6) * (2 * math.pi)
    x = (x + offset) / (x[:, :, -1:] + 1e-6) * (2 * math.pi)
    embedding = torch.cat(
        [_sine_cosine(y, num_feats, temperature), _sine_cosine(x, num_feats, temperature)], dim=-1
    )
    return embedding.permute(0, 3, 1, 2)


def box_sine_embedding(
    boxes: torch.Tensor, num_feats: int = 128, temperature: float = 10000.0
) -> torch.Tensor:
    """(..., 4·num_feats): the sine embedding of each coordinate of normalised (cx, cy, w, h)
    boxes (..., 4), scaled by 2π, concatenated in that order."""
    return _sine_cosine(boxes * (2 * math.pi), num_feats, temperature).flatten(-2)


class MLP(nn.Module):
    """``num_layers`` linear layers with ReLU between them (DETR's box head)."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int):
        super().__init__()
        widths = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x) if i == len(self.layers) - 1 else F.relu(layer(x))
        return x


class FeedForward(nn.Module):
    """Residual two-layer FFN with ReLU, followed by LayerNorm (post-norm, as DINO)."""

    def __init__(self, dim: int, dim_feedforward: int, dropout: float):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(dim, dim_feedforward),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(dim_feedforward, dim),
        )
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x + self.dropout(self.layers(x)))


class DeformableEncoderLayer(nn.Module):
    """Deformable self-attention over all levels (each position samples around itself), FFN."""

    def __init__(self, dim, num_heads, num_levels, num_points, dim_feedforward, dropout):
        super().__init__()
        self.attention = MultiScaleDeformableAttention(dim, num_heads, num_levels, num_points)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(dim)
        self.feedforward = FeedForward(dim, dim_feedforward, dropout)

    def forward(self, source, position, reference_points, spatial_shapes, padding_mask):
        attended = self.attention(
            source + position, reference_points, source, spatial_shapes, padding_mask
        )
        return self.feedforward(self.norm(source + self.dropout(attended)))


class DeformableDecoderLayer(nn.Module):
    """Self-attention among the queries (under the denoising mask), deformable cross-attention
    to the encoder's memory around each query's reference box, FFN."""

    def __init__(self, dim, num_heads, num_levels, num_points, dim_feedforward, dropout):
        super().__init__()
        self.self_attention = nn.MultiheadAttention(dim, num_heads, dropout, batch_first=True)
        self.self_attention_norm = nn.LayerNorm(dim)
        self.cross_attention = MultiScaleDeformableAttention(dim, num_heads, num_levels, num_points)
        self.cross_attention_norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        self.feedforward = FeedForward(dim, dim_feedforward, dropout)

    def forward(
        self,
        query,
        query_position,
        reference_boxes,
        memory,
        spatial_shapes,
        memory_padding_mask,
        attention_mask,
    ):
        key = query + query_position
        attended = self.self_attention(
            key, key, query, attn_mask=attention_mask, need_weights=False
        )[0]
        query = self.self_attention_norm(query + self.dropout(attended))
        attended = self.cross_attention(
            query + query_position, reference_boxes, memory, spatial_shapes, memory_padding_mask
        )
        query = self.cross_attention_norm(query + self.dropout(attended))
        return self.feedforward(query)


class EncoderFeatures(NamedTuple):
    """The encoder's input, flattened over levels: source (B, S, d), position (B, S, d) (sine
    plus level embedding), padding_mask (B, S) bool, spatial_shapes (L, 2) int64 (H, W),
    valid_ratios (B, L, 2) the unpadded fraction of each level along (x, y)."""

    source: torch.Tensor
    position: torch.Tensor
    padding_mask: torch.Tensor
    spatial_shapes: torch.Tensor
    valid_ratios: torch.Tensor


class TransformerOutput(NamedTuple):
    """encoder_logits (B, N, K) and encoder_boxes (B, N, 4) of the selected proposals;
    per decoder layer, logits (B, D + N, K) and boxes (B, D + N, 4)."""

    encoder_logits: torch.Tensor
    encoder_boxes: torch.Tensor
    decoder_logits: List[torch.Tensor]
    decoder_boxes: List[torch.Tensor]


def normalized_pixel_centers(inputs: EncoderFeatures) -> torch.Tensor:
    """(B, S, 2) the (x, y) of every position's pixel centre, ``(i + 0.5)`` divided by the
    unpadded width / height of its level in its image."""
    centers = []
    for level, (height, width) in enumerate(inputs.spatial_shapes.tolist()):
        ys, xs = torch.meshgrid(
            torch.arange(height, device=inputs.source.device, dtype=torch.float32) + 0.5,
            torch.arange(width, device=inputs.source.device, dtype=torch.float32) + 0.5,
            indexing="ij",
        )
        valid_size = inputs.valid_ratios[:, level] * xs.new_tensor([width, height])  # (B, 2)
        centers.append(torch.stack([xs.flatten(), ys.flatten()], dim=-1) / valid_size[:, None])
    return torch.cat(centers, dim=1)


class DINOTransformer(nn.Module):
    """Encoder, two-stage query selection and decoder of DINO.

    Query selection ("mixed"): the encoder output at every position is a proposal (its box is a
    square of side 0.05·2^level around the position, refined by the encoder box head); the
    ``num_queries`` positions with the highest class logit give the decoder's initial reference
    boxes (detached), while its content queries are learned embeddings. Each decoder layer
    predicts a box delta in inverse-sigmoid space relative to its reference box; the refined box
    is the next layer's reference (detached), and a layer's loss box is computed from the
    previous layer's *undetached* refined box ("look forward twice"). Each decoder layer has its
    own class and box heads (detrex), or all share one pair (``share_layer_heads``, the
    official DINO); the encoder has its own.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        hidden_dim: int = 256,
        num_heads: int = 8,
        num_levels: int = 4,
        num_points: int = 4,
        num_encoder_layers: int = 6,
        num_decoder_layers: int = 6,
        dim_feedforward: int = 2048,
        dropout: float = 0.0,
        num_queries: int = 900,
        prior_prob: float = 0.01,
        share_layer_heads: bool = False,
        position_temperature: float = 10000.0,
        position_offset: float = -0.5,
    ):
        """
        Args:
            position_temperature, position_offset: of the feature maps' sine position embedding
                (:func:`sine_position_embedding`), which :meth:`position_embedding` computes.
        """
        super().__init__()
        layer_args = (hidden_dim, num_heads, num_levels, num_points, dim_feedforward, dropout)
        self.num_queries, self.hidden_dim = num_queries, hidden_dim
        self.position_temperature, self.position_offset = position_temperature, position_offset
        self.level_embedding = nn.Parameter(torch.empty(num_levels, hidden_dim))
        self.encoder_layers = nn.ModuleList(
            DeformableEncoderLayer(*layer_args) for _ in range(num_encoder_layers)
        )
        self.proposal_projection = nn.Linear(hidden_dim, hidden_dim)
        self.proposal_norm = nn.LayerNorm(hidden_dim)
        self.encoder_class_head = nn.Linear(hidden_dim, num_classes)
        self.encoder_box_head = MLP(hidden_dim, hidden_dim, 4, 3)
        self.query_content = nn.Embedding(num_queries, hidden_dim)
        self.decoder_layers = nn.ModuleList(
            DeformableDecoderLayer(*layer_args) for _ in range(num_decoder_layers)
        )
        self.reference_position_head = MLP(2 * hidden_dim, hidden_dim, hidden_dim, 2)
        self.decoder_norm = nn.LayerNorm(hidden_dim)
        num_head_pairs = 1 if share_layer_heads else num_decoder_layers
        self.class_heads = nn.ModuleList(
            nn.Linear(hidden_dim, num_classes) for _ in range(num_head_pairs)
        )
        self.box_heads = nn.ModuleList(
            MLP(hidden_dim, hidden_dim, 4, 3) for _ in range(num_head_pairs)
        )
        self.reset_parameters(prior_prob)

    def reset_parameters(self, prior_prob: float) -> None:
        """As DINO: Xavier for the transformer's matrices (the learned content queries too), the
        deformable attentions' own initialisation, a normal level embedding; the heads keep
        PyTorch's default initialisation but for the prior-probability class bias and a zero
        last box layer."""
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        for module in self.modules():
            if isinstance(module, MultiScaleDeformableAttention):
                module.reset_parameters()
        nn.init.normal_(self.level_embedding)
        bias = -math.log((1 - prior_prob) / prior_prob)
        class_heads = [self.encoder_class_head, *self.class_heads]
        box_heads = [self.encoder_box_head, *self.box_heads]
        for head in class_heads + box_heads:
            for layer in head.modules():
                if isinstance(layer, nn.Linear):
                    layer.reset_parameters()
        for class_head, box_head in zip(class_heads, box_heads):
            nn.init.constant_(class_head.bias, bias)
            # Boxes start at their reference (the proposal, or the previous layer's box).
            nn.init.zeros_(box_head.layers[-1].weight)
            nn.init.zeros_(box_head.layers[-1].bias)

    @property
    def num_levels(self) -> int:
        return self.level_embedding.shape[0]

    def position_embedding(self, padding_mask: torch.Tensor) -> torch.Tensor:
        """(B, d, H, W) sine position embedding of a level with (B, H, W) padding mask."""
        return sine_position_embedding(
            padding_mask, self.hidden_dim // 2, self.position_temperature, self.position_offset
        )

    def flatten_levels(
        self,
        features: List[torch.Tensor],
        padding_masks: List[torch.Tensor],
        positions: List[torch.Tensor],
    ) -> EncoderFeatures:
        """Per level (B, d, H, W) features and positions and (B, H, W) masks → flat inputs."""
        shapes = torch.tensor(
            [f.shape[-2:] for f in features], dtype=torch.int64, device=features[0].device
        )
        valid_ratios = torch.stack(
            [
                torch.stack([(~m[:, 0]).sum(1) / m.shape[2], (~m[:, :, 0]).sum(1) / m.shape[1]], -1)
                for m in padding_masks
            ],
            dim=1,
        )  # unpadded columns of the first row, rows of the first column
        position = torch.cat(
            [
                (p.flatten(2).transpose(1, 2) + self.level_embedding[level])
                for level, p in enumerate(positions)
            ],
            dim=1,
        )
        return EncoderFeatures(
            torch.cat([f.flatten(2).transpose(1, 2) for f in features], dim=1),
            position,
            torch.cat([m.flatten(1) for m in padding_masks], dim=1),
            shapes,
            valid_ratios,
        )

    def encoder_reference_points(self, inputs: EncoderFeatures) -> torch.Tensor:
        """(B, S, L, 2): each position's pixel centre, normalised by its level's unpadded size,
        as seen from every level (scaled by that level's valid ratio)."""
        return normalized_pixel_centers(inputs)[:, :, None] * inputs.valid_ratios[:, None]

    def encode(self, inputs: EncoderFeatures) -> torch.Tensor:
        """(B, S, d) memory."""
        reference_points = self.encoder_reference_points(inputs)
        memory = inputs.source
        for layer in self.encoder_layers:
            memory = layer(
                memory,
                inputs.position,
                reference_points,
                inputs.spatial_shapes,
                inputs.padding_mask,
            )
        return memory

    def proposals(
        self, memory: torch.Tensor, inputs: EncoderFeatures
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per position, the encoder's proposal: logits (B, S, K), unsigmoided boxes (B, S, 4)
        and valid (B, S) bool (not padding, a proposal inside (0.01, 0.99))."""
        centers = normalized_pixel_centers(inputs)
        level_sizes = [0.05 * 2.0**level for level in range(len(inputs.spatial_shapes))]
        sizes = torch.repeat_interleave(
            centers.new_tensor(level_sizes), inputs.spatial_shapes.prod(dim=1)
        )
        anchors = torch.cat([centers, sizes[None, :, None].expand_as(centers)], dim=-1)
        valid = ((anchors > 0.01) & (anchors < 0.99)).all(-1) & ~inputs.padding_mask
        unsigmoided = torch.log(anchors / (1 - anchors)).masked_fill(~valid[..., None], 0.0)
        features = memory.masked_fill(~valid[..., None], 0.0)
        features = self.proposal_norm(self.proposal_projection(features))
        logits = self.encoder_class_head(features)
        boxes = self.encoder_box_head(features) + unsigmoided
        return logits, boxes, valid

    def select_queries(
        self, logits: torch.Tensor, boxes: torch.Tensor, valid: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """The ``num_queries`` proposals with the highest class logit (valid ones first):
        their logits (B, N, K) and unsigmoided boxes (B, N, 4)."""
        if self.num_queries > logits.shape[1]:
            raise ValueError(
                f"cfg.MODEL.DINO.NUM_QUERIES = {self.num_queries} exceeds the {logits.shape[1]} "
                "encoder positions of this batch's images: lower it, or feed larger images "
                "(INPUT.MIN_SIZE_TRAIN / MIN_SIZE_TEST)"
            )
        scores = logits.detach().max(-1).values.masked_fill(~valid, float("-inf"))
        index = scores.topk(self.num_queries, dim=1).indices[..., None]
        return (
            logits.gather(1, index.expand(-1, -1, logits.shape[-1])),
            boxes.gather(1, index.expand(-1, -1, 4)),
        )

    def decode(
        self,
        content: torch.Tensor,
        reference_unsigmoided: torch.Tensor,
        memory: torch.Tensor,
        inputs: EncoderFeatures,
        attention_mask: Optional[torch.Tensor],
    ) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
        """Per layer, logits (B, Q, K) and boxes (B, Q, 4) of the Q queries."""
        reference = reference_unsigmoided.sigmoid()
        previous_undetached = reference
        ratios = torch.cat([inputs.valid_ratios, inputs.valid_ratios], dim=-1)[:, None]
        query = content
        all_logits, all_boxes = [], []
        for index, layer in enumerate(self.decoder_layers):
            class_head = self.class_heads[index % len(self.class_heads)]
            box_head = self.box_heads[index % len(self.box_heads)]
            reference_boxes = reference[:, :, None] * ratios  # (B, Q, L, 4)
            query_position = self.reference_position_head(
                box_sine_embedding(reference_boxes[:, :, 0], self.hidden_dim // 2)
            )
            query = layer(
                query,
                query_position,
                reference_boxes,
                memory,
                inputs.spatial_shapes,
                inputs.padding_mask,
                attention_mask,
            )
            # As DINO: the next reference from the layer's output, the predictions (and the loss
            # boxes) from its normalised output.
            refined = (box_head(query) + inverse_sigmoid(reference)).sigmoid()
            hidden = self.decoder_norm(query)
            delta = box_head(hidden)
            all_boxes.append((delta + inverse_sigmoid(previous_undetached)).sigmoid())
            all_logits.append(class_head(hidden))
            previous_undetached, reference = refined, refined.detach()
        return all_logits, all_boxes

    def forward(
        self,
        inputs: EncoderFeatures,
        denoising_content: Optional[torch.Tensor] = None,
        denoising_boxes: Optional[torch.Tensor] = None,
        attention_mask: Optional[torch.Tensor] = None,
    ) -> TransformerOutput:
        """
        Args:
            inputs: the flattened levels (:meth:`flatten_levels`).
            denoising_content: (B, D, d) content of the denoising queries, or None.
            denoising_boxes: (B, D, 4) their noised boxes (normalised cxcywh), or None.
            attention_mask: (D + N, D + N) bool, True where the decoder's self-attention is
                blocked (:func:`~corrloss_d2.modeling.denoising.denoising_attention_mask`).
        """
        memory = self.encode(inputs)
        logits, boxes, valid = self.proposals(memory, inputs)
        encoder_logits, encoder_boxes = self.select_queries(logits, boxes, valid)
        content = self.query_content.weight[None].expand(len(memory), -1, -1)
        reference = encoder_boxes.detach()
        if denoising_content is not None:
            content = torch.cat([denoising_content, content], dim=1)
            reference = torch.cat([inverse_sigmoid(denoising_boxes), reference], dim=1)
        decoder_logits, decoder_boxes = self.decode(
            content, reference, memory, inputs, attention_mask
        )
        return TransformerOutput(
            encoder_logits, encoder_boxes.sigmoid(), decoder_logits, decoder_boxes
        )
