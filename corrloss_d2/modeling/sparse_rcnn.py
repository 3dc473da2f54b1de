"""CorrSparseRCNN: Sparse R-CNN (Sun et al., CVPR 2021) with Correlation Loss on every stage
(Kahraman et al., AAAI 2023) and Align-DETR's IA-BCE, mixed matching and prime-sample weights
(Cai et al., 2023).

Conventions: B images, N learnable proposals, K classes, S RoIAlign resolution, d hidden width.
Boxes are XYXY in the pixels of the (resized) input image unless a name says otherwise.
"""
import math
from typing import Dict, List, NamedTuple, Tuple

import torch
from fvcore.nn import giou_loss
from torch import nn
from torch.nn import functional as F

from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, build_backbone
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.modeling.poolers import ROIPooler
from detectron2.structures import Boxes, ImageList, Instances
from detectron2.utils.events import get_event_storage

from ..compiled_ops import check_config_compiled_ops
from ..config import validate_corrloss_config
from ..errors import ConfigError
from ..losses import (alignment_quality, capped_matches_per_target, mean_over_processes,
                      one_to_k_assignment, prime_sample_weights, set_matching_cost)
from .backbone import backbone_feature_shapes
from .correlation_hook import CorrelationLossHook, matched_box_iou
from .dense import ClassificationLoss

__all__ = ["CorrSparseRCNN", "SparseRCNNStage", "DynamicInstanceInteraction", "SparseRCNNCriterion"]

# Sparse R-CNN decodes box deltas with these weights (dx, dy, dw, dh).
BOX_DELTA_WEIGHTS = (2.0, 2.0, 1.0, 1.0)


class StageOutput(NamedTuple):
    """One refinement stage's predictions: logits (B, N, K), boxes (B, N, 4)."""

    logits: torch.Tensor
    boxes: torch.Tensor


class BatchTargets(NamedTuple):
    """The batch's ground truths concatenated over images: classes (G,) int64, boxes (G, 4)
    float32, and offsets (B,) the index of each image's first ground truth."""

    classes: torch.Tensor
    boxes: torch.Tensor
    offsets: torch.Tensor

    @classmethod
    def cat(cls, targets: List[Instances]) -> "BatchTargets":
        classes = torch.cat([t.gt_classes for t in targets])
        counts = torch.tensor([len(t) for t in targets], device=classes.device)
        return cls(classes, torch.cat([t.gt_boxes.tensor for t in targets]).float(),
                   torch.cumsum(counts, 0) - counts)


def _linear_norm_relu_layers(width: int, count: int) -> nn.Sequential:
    layers = []
    for _ in range(count):
        layers += [nn.Linear(width, width, bias=False), nn.LayerNorm(width), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class DynamicInstanceInteraction(nn.Module):
    """Sparse R-CNN's dynamic instance interaction: each proposal's feature generates the weights
    of ``num_dynamic`` 1×1 layers (d → dim_dynamic → … → d) applied to its own RoI feature, which
    is then flattened and projected back to d."""

    def __init__(self, *, hidden_dim: int, dim_dynamic: int, num_dynamic: int,
                 pooler_resolution: int):
        super().__init__()
        widths = [hidden_dim] + [dim_dynamic] * (num_dynamic - 1) + [hidden_dim]
        self.layer_shapes = list(zip(widths[:-1], widths[1:]))
        self.parameter_generator = nn.Linear(hidden_dim, sum(a * b for a, b in self.layer_shapes))
        self.norms = nn.ModuleList(nn.LayerNorm(out) for _, out in self.layer_shapes)
        self.out_layer = nn.Linear(hidden_dim * pooler_resolution ** 2, hidden_dim)
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
            weight = params[:, offset:offset + fan_in * fan_out].view(-1, fan_in, fan_out)
            offset += fan_in * fan_out
            x = F.relu(norm(torch.bmm(x, weight)))
        return F.relu(self.out_norm(self.out_layer(x.flatten(1))))


class SparseRCNNStage(nn.Module):
    """One iterative head: self-attention over proposals → dynamic instance interaction → FFN →
    class logits and box deltas relative to the stage's input boxes."""

    def __init__(self, *, num_classes: int, hidden_dim: int, num_heads: int, dim_feedforward: int,
                 dropout: float, dim_dynamic: int, num_dynamic: int, pooler_resolution: int,
                 num_cls_layers: int, num_reg_layers: int, prior_prob: float,
                 box2box_transform: Box2BoxTransform):
        super().__init__()
        self.self_attention = nn.MultiheadAttention(hidden_dim, num_heads, dropout=dropout,
                                                    batch_first=True)
        self.attention_norm = nn.LayerNorm(hidden_dim)
        self.interaction = DynamicInstanceInteraction(
            hidden_dim=hidden_dim, dim_dynamic=dim_dynamic, num_dynamic=num_dynamic,
            pooler_resolution=pooler_resolution)
        self.interaction_norm = nn.LayerNorm(hidden_dim)
        self.feedforward = nn.Sequential(
            nn.Linear(hidden_dim, dim_feedforward), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(dim_feedforward, hidden_dim))
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

    def forward(self, roi_features: torch.Tensor, proposal_features: torch.Tensor,
                boxes: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """
        Args:
            roi_features: (B·N, d, S, S) RoIAlign features of ``boxes``, image-major.
            proposal_features: (B, N, d). boxes: (B, N, 4) the stage's input boxes.
        Returns:
            logits (B, N, K), refined boxes (B, N, 4), proposal features for the next stage
            (B, N, d).
        """
        num_images, num_proposals, width = proposal_features.shape
        attended = self.self_attention(proposal_features, proposal_features, proposal_features,
                                       need_weights=False)[0]
        x = self.attention_norm(proposal_features + self.dropout(attended)).reshape(-1, width)
        x = self.interaction_norm(x + self.dropout(self.interaction(x, roi_features)))
        x = self.feedforward_norm(x + self.dropout(self.feedforward(x)))
        logits = self.class_logits(self.cls_tower(x))
        deltas = self.box_deltas(self.reg_tower(x))
        refined = self.box2box_transform.apply_deltas(deltas, boxes.reshape(-1, 4))
        return (logits.view(num_images, num_proposals, -1), refined.view(num_images, num_proposals, 4),
                x.view(num_images, num_proposals, width))


class SparseRCNNCriterion(nn.Module):
    """Per-stage Hungarian matching and losses of Sparse R-CNN with deep supervision:
    ``class_weight·cls + l1_weight·L1 + giou_weight·GIoU`` on every stage, each normalised by the
    number of ground-truth boxes averaged over processes (at least 1), plus the Correlation Loss
    of each stage's matched queries.

    Mixed matching (``one_to_many_k`` > 0): every stage but the last matches each ground truth to
    k queries (capped at ⌊0.5·N / #gt⌋, at least 1); the last stage stays one-to-one. Prime-sample
    weights (``prime_sample_tau`` > 0): within each ground truth's group, ``exp(−rank/τ)`` by the
    detached quality ``s^α·IoU^(1−α)`` (α of IA-BCE) scales the L1/GIoU terms and, with IA-BCE,
    the classification target.
    """

    def __init__(self, *, num_classes: int, classification_loss: ClassificationLoss,
                 correlation_hook: CorrelationLossHook, class_weight: float = 2.0,
                 l1_weight: float = 5.0, giou_weight: float = 2.0, focal_alpha: float = 0.25,
                 focal_gamma: float = 2.0, one_to_many_k: int = 0, prime_sample_tau: float = 0.0,
                 quality_alpha: float = 0.25):
        super().__init__()
        self.num_classes = num_classes
        self.classification_loss = classification_loss
        self.correlation_hook = correlation_hook
        self.loss_weights = {"cls": class_weight, "bbox": l1_weight, "giou": giou_weight}
        self.focal_alpha, self.focal_gamma = focal_alpha, focal_gamma
        self.one_to_many_k = one_to_many_k
        self.prime_sample_tau = prime_sample_tau
        self.quality_alpha = quality_alpha

    def matches_per_target(self, stage: int, num_stages: int) -> int:
        """k of the stage before capping: 1 on the last stage or without mixed matching."""
        return 1 if stage == num_stages - 1 or self.one_to_many_k == 0 else self.one_to_many_k

    @torch.no_grad()
    def match(self, output: StageOutput, targets: List[Instances], image_whwh: torch.Tensor,
              k: int) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        """Per image, ``(query_index, gt_index)`` (M_b,) int64 pairs of a one-to-k assignment."""
        matches = []
        for logits, boxes, target, whwh in zip(output.logits, output.boxes, targets, image_whwh):
            cost = set_matching_cost(
                logits, boxes, target.gt_classes, target.gt_boxes.tensor, whwh,
                class_weight=self.loss_weights["cls"], l1_weight=self.loss_weights["bbox"],
                giou_weight=self.loss_weights["giou"], focal_alpha=self.focal_alpha,
                focal_gamma=self.focal_gamma)
            capped = capped_matches_per_target(k, logits.shape[0], len(target))
            matches.append(one_to_k_assignment(cost, capped))
        return matches

    def forward(self, outputs: List[StageOutput], targets: List[Instances],
                image_whwh: torch.Tensor) -> Dict[str, torch.Tensor]:
        """
        Args:
            outputs: per stage, logits (B, N, K) and boxes (B, N, 4).
            targets: per image, Instances with gt_boxes and gt_classes (0..K-1).
            image_whwh: (B, 4) width, height, width, height of each input image.
        Returns:
            ``loss_{cls,bbox,giou}_stage{i}`` and, when its weight is > 0, ``loss_corr_stage{i}``.
        """
        normalizer = self.num_boxes_normalizer(targets, image_whwh.device)
        batch_targets = BatchTargets.cat(targets)
        losses = {}
        for stage, output in enumerate(outputs):
            self.check_diverged(output, stage)
            k = self.matches_per_target(stage, len(outputs))
            matches = self.match(output, targets, image_whwh, k)
            losses.update(self.stage_losses(output, batch_targets, image_whwh, matches, normalizer,
                                            suffix=f"_stage{stage}"))
        return losses

    @staticmethod
    def check_diverged(output: StageOutput, stage: int) -> None:
        """FloatingPointError naming the iteration when a stage predicts NaN/inf logits or boxes,
        or inverted boxes (x2 < x1: learnable proposals of negative size), the signs of a
        diverged run; matching or GIoU would otherwise fail deep inside."""
        problem = None
        if not (torch.isfinite(output.logits).all() and torch.isfinite(output.boxes).all()):
            problem = "NaN or infinite logits or boxes"
        elif (output.boxes[..., 2:] < output.boxes[..., :2]).any():
            problem = "inverted boxes (x2 < x1 or y2 < y1)"
        if problem:
            raise FloatingPointError(
                f"CorrSparseRCNN stage {stage} predicted {problem} at iteration "
                f"{get_event_storage().iter}: training diverged. Lower SOLVER.BASE_LR (Sparse "
                "R-CNN: 2.5e-5 at batch 16, scaled with the batch) or keep SOLVER.CLIP_GRADIENTS "
                "enabled.")

    @staticmethod
    def num_boxes_normalizer(targets: List[Instances], device) -> float:
        """Ground-truth boxes of the batch, averaged over processes, at least 1."""
        return max(mean_over_processes(sum(len(t) for t in targets), device), 1.0)

    def stage_losses(self, output: StageOutput, targets: BatchTargets, image_whwh: torch.Tensor,
                     matches: List[Tuple[torch.Tensor, torch.Tensor]], normalizer: float, *,
                     suffix: str) -> Dict[str, torch.Tensor]:
        """Losses of one stage given its matches (see :meth:`match`)."""
        num_images, num_proposals, num_classes = output.logits.shape
        image_index = torch.cat([torch.full_like(q, b) for b, (q, _) in enumerate(matches)])
        query_index = torch.cat([q for q, _ in matches])
        gt_index = torch.cat([g + offset for (_, g), offset in zip(matches, targets.offsets)])
        gt_classes, gt_boxes = targets.classes[gt_index], targets.boxes[gt_index]

        logits = output.logits.float()
        matched_logits = logits[image_index, query_index, gt_classes]
        matched_boxes = output.boxes[image_index, query_index].float()
        ious = matched_box_iou(matched_boxes.detach(), gt_boxes)
        weights = None
        if self.prime_sample_tau > 0:
            quality = alignment_quality(torch.sigmoid(matched_logits.detach()), ious,
                                        self.quality_alpha)
            weights = prime_sample_weights(quality, gt_index, tau=self.prime_sample_tau)

        flat_index = image_index * num_proposals + query_index
        labels = torch.full((num_images * num_proposals,), num_classes, dtype=torch.int64,
                            device=logits.device)
        labels[flat_index] = gt_classes
        row_ious = row_weights = None
        if self.classification_loss.uses_ious:
            row_ious = torch.zeros_like(labels, dtype=ious.dtype).index_put_((flat_index,), ious)
        if weights is not None and self.classification_loss.kind == "ia_bce":
            row_weights = torch.ones_like(labels, dtype=weights.dtype).index_put_((flat_index,), weights)
        loss_cls = self.classification_loss(logits.flatten(0, 1), labels, row_ious, normalizer,
                                            weights=row_weights)

        whwh = image_whwh[image_index]
        loss_l1 = (matched_boxes / whwh - gt_boxes / whwh).abs().sum(dim=1)
        loss_giou = giou_loss(matched_boxes, gt_boxes, reduction="none")
        if weights is not None:
            loss_l1, loss_giou = loss_l1 * weights, loss_giou * weights
        unweighted = {"cls": loss_cls, "bbox": loss_l1.sum() / normalizer,
                      "giou": loss_giou.sum() / normalizer}
        losses = {f"loss_{name}{suffix}": self.loss_weights[name] * value
                  for name, value in unweighted.items()}
        losses.update(self.correlation_hook(matched_logits, matched_boxes.detach(), gt_boxes,
                                            image_index=image_index, ious=ious,
                                            name_suffix=suffix))
        return losses


@META_ARCH_REGISTRY.register()
class CorrSparseRCNN(nn.Module):
    """Sparse R-CNN: N learnable proposal boxes (normalised cxcywh, initialised to the whole
    image) and features refined by ``len(stages)`` heads on RoIAlign features of FPN P2–P5; the
    last stage's top-k (proposal, class) pairs are the detections, no NMS. Trained with
    :class:`SparseRCNNCriterion` (MODEL.SPARSE_RCNN, MODEL.CLS_LOSS, MODEL.CORR_LOSS; the paper
    puts λ·(1 − ρ) with one ρ over the batch's matched queries on every stage).

    Input/output: detectron2's list-of-dicts format; in inference each image gets exactly
    ``min(max_detections_per_image, N·K)`` detections sorted by score, boxes in the original
    image's pixels.
    """

    @configurable
    def __init__(self, *, backbone: nn.Module, in_features: List[str], pooler: ROIPooler,
                 stages: List[SparseRCNNStage], criterion: SparseRCNNCriterion, num_proposals: int,
                 hidden_dim: int, max_detections_per_image: int, pixel_mean: Tuple[float, ...],
                 pixel_std: Tuple[float, ...]):
        """
        Args:
            backbone: produces ``in_features`` with ``hidden_dim`` channels.
            pooler: RoIAlign over those features. stages: the refinement heads in order.
            criterion: the training losses. num_proposals: N. hidden_dim: d.
            max_detections_per_image: k of the inference top-k.
            pixel_mean, pixel_std: input normalisation, as in detectron2's detectors.
        """
        super().__init__()
        self.backbone = backbone
        self.in_features = list(in_features)
        self.pooler = pooler
        self.stages = nn.ModuleList(stages)
        self.criterion = criterion
        self.max_detections_per_image = max_detections_per_image
        self.proposal_boxes = nn.Embedding(num_proposals, 4)
        nn.init.constant_(self.proposal_boxes.weight[:, :2], 0.5)
        nn.init.constant_(self.proposal_boxes.weight[:, 2:], 1.0)
        self.proposal_features = nn.Embedding(num_proposals, hidden_dim)
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)

    @classmethod
    def from_config(cls, cfg):
        validate_corrloss_config(cfg)
        check_config_compiled_ops(cfg)
        sparse = cfg.MODEL.SPARSE_RCNN
        if cfg.MODEL.CORR_LOSS.GROUP_BY == "level":
            raise ConfigError("cfg.MODEL.CORR_LOSS.GROUP_BY = 'level' is not valid for "
                              "CorrSparseRCNN, whose queries have no FPN level; allowed values: "
                              "'auto' or 'batch' (one ρ per stage over the batch, the paper) and "
                              "'image'")
        backbone = build_backbone(cfg)
        shapes = backbone_feature_shapes(backbone, sparse.IN_FEATURES, "MODEL.SPARSE_RCNN.IN_FEATURES")
        channels = {s.channels for s in shapes}
        if channels != {sparse.HIDDEN_DIM}:
            raise ConfigError(f"cfg.MODEL.SPARSE_RCNN.HIDDEN_DIM = {sparse.HIDDEN_DIM} must equal "
                              f"the channels of the features it pools ({sorted(channels)}; "
                              "MODEL.FPN.OUT_CHANNELS for an FPN backbone)")
        box_head = cfg.MODEL.ROI_BOX_HEAD
        pooler = ROIPooler(output_size=box_head.POOLER_RESOLUTION,
                           scales=tuple(1.0 / s.stride for s in shapes),
                           sampling_ratio=box_head.POOLER_SAMPLING_RATIO,
                           pooler_type=box_head.POOLER_TYPE)
        box2box_transform = Box2BoxTransform(weights=BOX_DELTA_WEIGHTS)
        stages = [SparseRCNNStage(
            num_classes=sparse.NUM_CLASSES, hidden_dim=sparse.HIDDEN_DIM, num_heads=sparse.NUM_HEADS,
            dim_feedforward=sparse.DIM_FEEDFORWARD, dropout=sparse.DROPOUT,
            dim_dynamic=sparse.DIM_DYNAMIC, num_dynamic=sparse.NUM_DYNAMIC,
            pooler_resolution=box_head.POOLER_RESOLUTION, num_cls_layers=sparse.NUM_CLS_LAYERS,
            num_reg_layers=sparse.NUM_REG_LAYERS, prior_prob=sparse.PRIOR_PROB,
            box2box_transform=box2box_transform) for _ in range(sparse.NUM_STAGES)]
        criterion = SparseRCNNCriterion(
            num_classes=sparse.NUM_CLASSES,
            classification_loss=ClassificationLoss(cfg, focal_alpha=sparse.FOCAL_LOSS_ALPHA,
                                                   focal_gamma=sparse.FOCAL_LOSS_GAMMA),
            correlation_hook=CorrelationLossHook(cfg, default_group_by="batch"),
            class_weight=sparse.CLASS_WEIGHT, l1_weight=sparse.L1_WEIGHT,
            giou_weight=sparse.GIOU_WEIGHT, focal_alpha=sparse.FOCAL_LOSS_ALPHA,
            focal_gamma=sparse.FOCAL_LOSS_GAMMA, one_to_many_k=sparse.ONE_TO_MANY_K,
            prime_sample_tau=sparse.PRIME_SAMPLE_TAU, quality_alpha=cfg.MODEL.CLS_LOSS.IA_BCE_ALPHA)
        return {
            "backbone": backbone,
            "in_features": sparse.IN_FEATURES,
            "pooler": pooler,
            "stages": stages,
            "criterion": criterion,
            "num_proposals": sparse.NUM_PROPOSALS,
            "hidden_dim": sparse.HIDDEN_DIM,
            "max_detections_per_image": cfg.TEST.DETECTIONS_PER_IMAGE,
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
        }

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    @property
    def correlation_hook(self) -> CorrelationLossHook:
        """The hook every stage's Correlation Loss goes through."""
        return self.criterion.correlation_hook

    def preprocess_image(self, batched_inputs: List[Dict]) -> ImageList:
        images = [(x["image"].to(self.device) - self.pixel_mean) / self.pixel_std
                  for x in batched_inputs]
        return ImageList.from_tensors(images, self.backbone.size_divisibility)

    def forward(self, batched_inputs: List[Dict]):
        """Training: dict of losses. Inference: ``[{"instances": Instances}]`` per image."""
        images = self.preprocess_image(batched_inputs)
        features = self.backbone(images.tensor)
        features = [features[f] for f in self.in_features]
        image_whwh = torch.tensor([[w, h, w, h] for h, w in images.image_sizes],
                                  dtype=torch.float32, device=self.device)
        outputs = self.refine(features, image_whwh)
        if self.training:
            targets = [x["instances"].to(self.device) for x in batched_inputs]
            return self.criterion(outputs, targets, image_whwh)
        return self.inference(outputs[-1], images.image_sizes, batched_inputs)

    def initial_boxes(self, image_whwh: torch.Tensor) -> torch.Tensor:
        """(B, N, 4) the learnable proposals, normalised cxcywh, in each image's pixels."""
        center, size = self.proposal_boxes.weight.split(2, dim=1)
        normalized = torch.cat([center - size / 2, center + size / 2], dim=1)
        return normalized[None] * image_whwh[:, None]

    def refine(self, features: List[torch.Tensor], image_whwh: torch.Tensor) -> List[StageOutput]:
        """Runs every stage; each stage's boxes feed the next, detached."""
        boxes = self.initial_boxes(image_whwh)
        proposal_features = self.proposal_features.weight[None].expand(len(image_whwh), -1, -1)
        outputs = []
        for stage in self.stages:
            roi_features = self.pooler(features, [Boxes(b.detach()) for b in boxes])
            logits, refined, proposal_features = stage(roi_features, proposal_features, boxes)
            outputs.append(StageOutput(logits, refined))
            boxes = refined.detach()
        return outputs

    def inference(self, output: StageOutput, image_sizes: List[Tuple[int, int]],
                  batched_inputs: List[Dict]) -> List[Dict[str, Instances]]:
        """Top-k (proposal, class) pairs of the last stage by sigmoid score, no NMS; boxes clipped
        to the input image and scaled to the requested output size (``height``/``width``)."""
        num_classes = output.logits.shape[-1]
        scores = torch.sigmoid(output.logits.float()).flatten(1)  # (B, N·K)
        k = min(self.max_detections_per_image, scores.shape[1])
        top_scores, top_index = scores.topk(k, dim=1)
        results = []
        for i, (size, inputs) in enumerate(zip(image_sizes, batched_inputs)):
            boxes = Boxes(output.boxes[i, top_index[i] // num_classes].float())
            boxes.clip(size)
            height, width = inputs.get("height", size[0]), inputs.get("width", size[1])
            boxes.scale(width / size[1], height / size[0])
            instances = Instances((height, width), pred_boxes=boxes, scores=top_scores[i],
                                  pred_classes=top_index[i] % num_classes)
            results.append({"instances": instances})
        return results
