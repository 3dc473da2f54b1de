"""CorrSparseRCNN: Sparse R-CNN (Sun et al., CVPR 2021), NMS-free, with Correlation Loss on every
stage and Align-DETR's IA-BCE, mixed matching and prime-sample weights
(:mod:`corrloss_d2.modeling.set_criterion`).

Conventions: B images, N learnable proposals, K classes, S RoIAlign resolution, d hidden width.
Boxes are XYXY in the pixels of the (resized) input image unless a name says otherwise.
"""

from typing import Dict, List, Tuple

import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, build_backbone
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.modeling.poolers import ROIPooler
from detectron2.structures import Boxes, ImageList
from torch import nn

from ...errors import ConfigError
from ..backbone import backbone_feature_shapes
from ..classification_loss import ClassificationLoss
from ..correlation_loss import CorrelationLoss
from ..set_criterion import SetCriterion
from ..set_prediction import SetPrediction, top_k_detections
from ..sparse_rcnn_head import BOX_DELTA_WEIGHTS, SparseRCNNStage
from .build import check_model_config, check_query_detector_grouping

__all__ = ["CorrSparseRCNN"]


@META_ARCH_REGISTRY.register()
class CorrSparseRCNN(nn.Module):
    """Sparse R-CNN: N learnable proposal boxes (normalised cxcywh, initialised to the whole
    image) and features refined by ``len(stages)`` heads on RoIAlign features of FPN P2–P5; the
    last stage's top-k (proposal, class) pairs are the detections, no NMS. Trained with
    :class:`SetCriterion` (MODEL.SPARSE_RCNN, MODEL.CLS_LOSS, MODEL.CORR_LOSS; the paper
    puts λ·(1 − ρ) with one ρ over the batch's matched queries on every stage).

    Input/output: detectron2's list-of-dicts format; in inference each image gets exactly
    ``min(max_detections_per_image, N·K)`` detections sorted by score, boxes in the original
    image's pixels.
    """

    NUM_CLASSES_KEY = "MODEL.SPARSE_RCNN.NUM_CLASSES"

    @configurable
    def __init__(
        self,
        *,
        backbone: nn.Module,
        in_features: List[str],
        pooler: ROIPooler,
        stages: List[SparseRCNNStage],
        criterion: SetCriterion,
        num_proposals: int,
        hidden_dim: int,
        max_detections_per_image: int,
        pixel_mean: Tuple[float, ...],
        pixel_std: Tuple[float, ...],
    ):
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
        check_model_config(cfg)
        sparse = cfg.MODEL.SPARSE_RCNN
        check_query_detector_grouping(cfg, "CorrSparseRCNN")
        backbone = build_backbone(cfg)
        shapes = backbone_feature_shapes(
            backbone, sparse.IN_FEATURES, "MODEL.SPARSE_RCNN.IN_FEATURES"
        )
        channels = {s.channels for s in shapes}
        if channels != {sparse.HIDDEN_DIM}:
            raise ConfigError(
                f"cfg.MODEL.SPARSE_RCNN.HIDDEN_DIM = {sparse.HIDDEN_DIM} must equal "
                f"the channels of the features it pools ({sorted(channels)}; "
                "MODEL.FPN.OUT_CHANNELS for an FPN backbone)"
            )
        box_head = cfg.MODEL.ROI_BOX_HEAD
        pooler = ROIPooler(
            output_size=box_head.POOLER_RESOLUTION,
            scales=tuple(1.0 / s.stride for s in shapes),
            sampling_ratio=box_head.POOLER_SAMPLING_RATIO,
            pooler_type=box_head.POOLER_TYPE,
        )
        box2box_transform = Box2BoxTransform(weights=BOX_DELTA_WEIGHTS)
        stages = [
            SparseRCNNStage(
                num_classes=sparse.NUM_CLASSES,
                hidden_dim=sparse.HIDDEN_DIM,
                num_heads=sparse.NUM_HEADS,
                dim_feedforward=sparse.DIM_FEEDFORWARD,
                dropout=sparse.DROPOUT,
                dim_dynamic=sparse.DIM_DYNAMIC,
                num_dynamic=sparse.NUM_DYNAMIC,
                pooler_resolution=box_head.POOLER_RESOLUTION,
                num_cls_layers=sparse.NUM_CLS_LAYERS,
                num_reg_layers=sparse.NUM_REG_LAYERS,
                prior_prob=sparse.PRIOR_PROB,
                box2box_transform=box2box_transform,
            )
            for _ in range(sparse.NUM_STAGES)
        ]
        criterion = SetCriterion(
            num_classes=sparse.NUM_CLASSES,
            classification_loss=ClassificationLoss(
                cfg, focal_alpha=sparse.FOCAL_LOSS_ALPHA, focal_gamma=sparse.FOCAL_LOSS_GAMMA
            ),
            correlation_loss=CorrelationLoss(cfg, default_group_by="batch"),
            class_weight=sparse.CLASS_WEIGHT,
            l1_weight=sparse.L1_WEIGHT,
            giou_weight=sparse.GIOU_WEIGHT,
            cost_class_weight=sparse.COST_CLASS_WEIGHT,
            cost_l1_weight=sparse.COST_L1_WEIGHT,
            cost_giou_weight=sparse.COST_GIOU_WEIGHT,
            focal_alpha=sparse.FOCAL_LOSS_ALPHA,
            focal_gamma=sparse.FOCAL_LOSS_GAMMA,
            one_to_many_k=sparse.ONE_TO_MANY_K,
            prime_sample_tau=sparse.PRIME_SAMPLE_TAU,
            quality_alpha=cfg.MODEL.CLS_LOSS.IA_BCE_ALPHA,
            divergence_hint="Lower SOLVER.BASE_LR (Sparse R-CNN: 2.5e-5 at batch 16, scaled "
            "with the batch) or keep SOLVER.CLIP_GRADIENTS enabled.",
        )
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
    def correlation_loss(self) -> CorrelationLoss:
        """The module every stage's Correlation Loss goes through."""
        return self.criterion.correlation_loss

    def preprocess_image(self, batched_inputs: List[Dict]) -> ImageList:
        images = [
            (x["image"].to(self.device) - self.pixel_mean) / self.pixel_std for x in batched_inputs
        ]
        return ImageList.from_tensors(images, self.backbone.size_divisibility)

    def forward(self, batched_inputs: List[Dict]):
        """Training: dict of losses. Inference: ``[{"instances": Instances}]`` per image."""
        images = self.preprocess_image(batched_inputs)
        features = self.backbone(images.tensor)
        features = [features[f] for f in self.in_features]
        image_whwh = torch.tensor(
            [[w, h, w, h] for h, w in images.image_sizes], dtype=torch.float32, device=self.device
        )
        outputs = self.refine(features, image_whwh)
        if self.training:
            targets = [x["instances"].to(self.device) for x in batched_inputs]
            return self.criterion(outputs, targets, image_whwh)
        return top_k_detections(
            outputs[-1], images.image_sizes, batched_inputs, self.max_detections_per_image
        )

    def initial_boxes(self, image_whwh: torch.Tensor) -> torch.Tensor:
        """(B, N, 4) the learnable proposals, normalised cxcywh, in each image's pixels."""
        center, size = self.proposal_boxes.weight.split(2, dim=1)
        normalized = torch.cat([center - size / 2, center + size / 2], dim=1)
        return normalized[None] * image_whwh[:, None]

    def refine(self, features: List[torch.Tensor], image_whwh: torch.Tensor) -> List[SetPrediction]:
        """Runs every stage; each stage's boxes feed the next, detached."""
        boxes = self.initial_boxes(image_whwh)
        proposal_features = self.proposal_features.weight[None].expand(len(image_whwh), -1, -1)
        outputs = []
        for stage in self.stages:
            roi_features = self.pooler(features, [Boxes(b.detach()) for b in boxes])
            logits, refined, proposal_features = stage(roi_features, proposal_features, boxes)
            outputs.append(SetPrediction(logits, refined))
            boxes = refined.detach()
        return outputs
