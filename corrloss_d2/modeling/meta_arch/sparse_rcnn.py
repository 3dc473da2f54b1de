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
from detectron2.structures import Boxes
from torch import nn

from ...errors import ConfigError
from ..backbone import backbone_feature_shapes
from ..set_criterion import SetCriterion, set_criterion_from_config
from ..set_prediction import SetPrediction, SetPredictionDetector
from ..sparse_rcnn_head import BOX_DELTA_WEIGHTS, SparseRCNNStage
from .build import check_model_config, check_query_detector_grouping

__all__ = ["CorrSparseRCNN"]


@META_ARCH_REGISTRY.register()
class CorrSparseRCNN(SetPredictionDetector):
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
        super().__init__(
            backbone=backbone,
            criterion=criterion,
            max_detections_per_image=max_detections_per_image,
            pixel_mean=pixel_mean,
            pixel_std=pixel_std,
        )
        self.in_features = list(in_features)
        self.pooler = pooler
        self.stages = nn.ModuleList(stages)
        self.proposal_boxes = nn.Embedding(num_proposals, 4)
        nn.init.constant_(self.proposal_boxes.weight[:, :2], 0.5)
        nn.init.constant_(self.proposal_boxes.weight[:, 2:], 1.0)
        self.proposal_features = nn.Embedding(num_proposals, hidden_dim)

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
        criterion = set_criterion_from_config(
            cfg,
            "SPARSE_RCNN",
            l1_box_format="xyxy",
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

    def forward(self, batched_inputs: List[Dict]):
        """Training: dict of losses. Inference: ``[{"instances": Instances}]`` per image."""
        images = self.preprocess_image(batched_inputs)
        features = self.backbone(images.tensor)
        features = [features[f] for f in self.in_features]
        image_whwh = self.image_whwh(images)
        outputs = self.refine(features, image_whwh)
        if self.training:
            targets = [x["instances"].to(self.device) for x in batched_inputs]
            return self.criterion(outputs, targets, image_whwh)
        return self.detections(outputs[-1], images, batched_inputs)

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
