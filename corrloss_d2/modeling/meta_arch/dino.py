"""CorrDINO: DINO (Zhang et al., ICLR 2023), NMS-free, with Correlation Loss on every decoder
layer (Kahraman et al., AAAI 2023) and Align-DETR's IA-BCE, mixed matching and prime-sample
weights (Cai et al., 2023) through the query-based detectors' shared criterion
(:mod:`corrloss_d2.modeling.set_criterion`).

Conventions: B images, L feature levels, N matching queries, D denoising queries, K classes, d
hidden width. Boxes are XYXY in the pixels of the (resized) input image unless a name says
otherwise; the transformer works on normalised (cx, cy, w, h).
"""

from typing import Dict, List, Optional, Tuple

import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, build_backbone
from detectron2.structures import ImageList, Instances
from torch import nn
from torch.nn import functional as F
from torchvision.ops import box_convert

from ...config import DINO_GROUP_NORM_GROUPS
from ...errors import ConfigError
from ...losses import normalized_box_coordinates
from ..backbone import backbone_feature_shapes
from ..denoising import DenoisingQueries, contrastive_denoising_queries
from ..dino_transformer import DINOTransformer, TransformerOutput
from ..set_criterion import BatchTargets, SetCriterion, set_criterion_from_config
from ..set_prediction import SetPrediction, SetPredictionDetector
from .build import check_model_config, check_query_detector_grouping

__all__ = ["CorrDINO"]


def _cxcywh_to_pixel_xyxy(boxes: torch.Tensor, image_whwh: torch.Tensor) -> torch.Tensor:
    """(B, Q, 4) normalised cxcywh → XYXY in the pixels of (B, 4) image sizes."""
    return box_convert(boxes, "cxcywh", "xyxy") * image_whwh[:, None]


@META_ARCH_REGISTRY.register()
class CorrDINO(SetPredictionDetector):
    """DINO with a detectron2 backbone: its features (e.g. ResNet C3–C5) plus strided 3×3
    convolutions for the further levels, projected to d channels with GroupNorm; sine position
    embeddings plus a learned level embedding; the deformable transformer
    (:class:`~corrloss_d2.modeling.dino_transformer.DINOTransformer`); contrastive denoising in
    training (:mod:`~corrloss_d2.modeling.denoising`).

    Training losses (:class:`SetCriterion`, MODEL.DINO, MODEL.CLS_LOSS, MODEL.CORR_LOSS):
    ``loss_{cls,bbox,giou}_enc`` on the selected encoder proposals, ``..._layer{i}`` on every
    decoder layer's matching queries (mixed matching: all but the last layer one-to-k),
    ``..._dn_layer{i}`` on every layer's denoising queries (matched by construction, normalised
    by the ground-truth count times the denoising groups, as DINO), and ``loss_corr_layer{i}``
    per decoder layer over its matched queries.

    Input/output: detectron2's list-of-dicts format; in inference each image gets exactly
    ``min(max_detections_per_image, N·K)`` detections of the last layer sorted by score, no NMS.
    """

    NUM_CLASSES_KEY = "MODEL.DINO.NUM_CLASSES"

    @configurable
    def __init__(
        self,
        *,
        backbone: nn.Module,
        in_features: List[str],
        in_channels: List[int],
        transformer: DINOTransformer,
        criterion: SetCriterion,
        num_classes: int,
        dn_number: int,
        dn_label_noise_ratio: float,
        dn_box_noise_scale: float,
        max_detections_per_image: int,
        pixel_mean: Tuple[float, ...],
        pixel_std: Tuple[float, ...],
    ):
        """
        Args:
            backbone: produces ``in_features``, of ``in_channels`` channels.
            transformer: its levels beyond ``len(in_features)`` come from strided convolutions
                on the last backbone feature.
            criterion: the training losses. num_classes: K.
            dn_number, dn_label_noise_ratio, dn_box_noise_scale: contrastive denoising (see
                :func:`~corrloss_d2.modeling.denoising.contrastive_denoising_queries`); 0
                queries: no denoising.
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
        self.transformer = transformer
        self.num_classes = num_classes
        self.dn_number = dn_number
        self.dn_label_noise_ratio = dn_label_noise_ratio
        self.dn_box_noise_scale = dn_box_noise_scale
        hidden_dim = transformer.hidden_dim
        projections = [nn.Conv2d(c, hidden_dim, kernel_size=1) for c in in_channels]
        extra_in = in_channels[-1]
        for _ in range(transformer.num_levels - len(in_channels)):
            projections.append(nn.Conv2d(extra_in, hidden_dim, kernel_size=3, stride=2, padding=1))
            extra_in = hidden_dim
        self.input_projections = nn.ModuleList(
            nn.Sequential(conv, nn.GroupNorm(DINO_GROUP_NORM_GROUPS, hidden_dim))
            for conv in projections
        )
        for projection in self.input_projections:
            nn.init.xavier_uniform_(projection[0].weight, gain=1)
            nn.init.zeros_(projection[0].bias)
        self.label_embedding = nn.Embedding(num_classes, hidden_dim)

    @classmethod
    def from_config(cls, cfg):
        check_model_config(cfg)
        check_query_detector_grouping(cfg, "CorrDINO")
        dino = cfg.MODEL.DINO
        backbone = build_backbone(cfg)
        shapes = backbone_feature_shapes(backbone, dino.IN_FEATURES, "MODEL.DINO.IN_FEATURES")
        if dino.NUM_FEATURE_LEVELS < len(dino.IN_FEATURES):
            raise ConfigError(
                f"cfg.MODEL.DINO.NUM_FEATURE_LEVELS = {dino.NUM_FEATURE_LEVELS} is fewer than "
                f"the {len(dino.IN_FEATURES)} MODEL.DINO.IN_FEATURES: it counts them plus the "
                "levels made by strided convolutions (DINO 4-scale: 3 + 1)"
            )
        transformer = DINOTransformer(
            num_classes=dino.NUM_CLASSES,
            hidden_dim=dino.HIDDEN_DIM,
            num_heads=dino.NUM_HEADS,
            num_levels=dino.NUM_FEATURE_LEVELS,
            num_points=dino.NUM_POINTS,
            num_encoder_layers=dino.NUM_ENCODER_LAYERS,
            num_decoder_layers=dino.NUM_DECODER_LAYERS,
            dim_feedforward=dino.DIM_FEEDFORWARD,
            dropout=dino.DROPOUT,
            num_queries=dino.NUM_QUERIES,
            prior_prob=dino.PRIOR_PROB,
            share_layer_heads=dino.SHARE_LAYER_HEADS,
            position_temperature=dino.POSITION_EMBEDDING_TEMPERATURE,
            position_offset=dino.POSITION_EMBEDDING_OFFSET,
        )
        criterion = set_criterion_from_config(
            cfg,
            "DINO",
            l1_box_format="cxcywh",
            divergence_hint="Lower SOLVER.BASE_LR (DINO: 1e-4 at batch 16) or keep "
            "SOLVER.CLIP_GRADIENTS enabled (DINO: full_model, 0.1).",
        )
        return {
            "backbone": backbone,
            "in_features": dino.IN_FEATURES,
            "in_channels": [s.channels for s in shapes],
            "transformer": transformer,
            "criterion": criterion,
            "num_classes": dino.NUM_CLASSES,
            "dn_number": dino.DN_NUMBER,
            "dn_label_noise_ratio": dino.DN_LABEL_NOISE_RATIO,
            "dn_box_noise_scale": dino.DN_BOX_NOISE_SCALE,
            "max_detections_per_image": cfg.TEST.DETECTIONS_PER_IMAGE,
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
        }

    def multi_level_features(
        self, images: ImageList
    ) -> Tuple[List[torch.Tensor], List[torch.Tensor], List[torch.Tensor]]:
        """Per level: projected features (B, d, H, W), padding masks (B, H, W) bool (True where
        the batch padded the image) and sine position embeddings (B, d, H, W)."""
        backbone_features = self.backbone(images.tensor)
        inputs = [backbone_features[f] for f in self.in_features]
        # The extra levels: the first from the last backbone feature, each next from the last.
        features = [projection(x) for projection, x in zip(self.input_projections, inputs)]
        source = inputs[-1]
        for projection in self.input_projections[len(inputs) :]:
            features.append(projection(source))
            source = features[-1]
        height, width = images.tensor.shape[-2:]
        padded = torch.ones(len(images), height, width, dtype=torch.bool, device=self.device)
        for i, (h, w) in enumerate(images.image_sizes):
            padded[i, :h, :w] = False
        masks = [F.interpolate(padded[None].float(), size=f.shape[-2:])[0].bool() for f in features]
        positions = [
            self.transformer.position_embedding(m).to(f.dtype) for m, f in zip(masks, features)
        ]
        return features, masks, positions

    def forward(self, batched_inputs: List[Dict]):
        """Training: dict of losses. Inference: ``[{"instances": Instances}]`` per image."""
        images = self.preprocess_image(batched_inputs)
        image_whwh = self.image_whwh(images)
        encoder_inputs = self.transformer.flatten_levels(*self.multi_level_features(images))
        if not self.training:
            output = self.transformer(encoder_inputs)
            last = SetPrediction(
                output.decoder_logits[-1],
                _cxcywh_to_pixel_xyxy(output.decoder_boxes[-1], image_whwh),
            )
            return self.detections(last, images, batched_inputs)
        targets = [x["instances"].to(self.device) for x in batched_inputs]
        denoising = self.denoising_queries(targets, image_whwh)
        if denoising is None:
            output = self.transformer(encoder_inputs)
        else:
            valid = denoising.labels >= 0
            content = self.label_embedding(denoising.labels.clamp(min=0)) * valid[..., None]
            output = self.transformer(
                encoder_inputs, content, denoising.boxes, denoising.attention_mask
            )
        return self.losses(output, denoising, targets, image_whwh)

    def denoising_queries(
        self, targets: List[Instances], image_whwh: torch.Tensor
    ) -> Optional[DenoisingQueries]:
        """The batch's noised ground truths (None without ground truths or with DN_NUMBER 0)."""
        return contrastive_denoising_queries(
            [t.gt_classes for t in targets],
            [
                normalized_box_coordinates(t.gt_boxes.tensor, whwh, "cxcywh")
                for t, whwh in zip(targets, image_whwh)
            ],
            num_classes=self.num_classes,
            num_matching_queries=self.transformer.num_queries,
            dn_number=self.dn_number,
            label_noise_ratio=self.dn_label_noise_ratio,
            box_noise_scale=self.dn_box_noise_scale,
        )

    def losses(
        self,
        output: TransformerOutput,
        denoising: Optional[DenoisingQueries],
        targets: List[Instances],
        image_whwh: torch.Tensor,
    ) -> Dict[str, torch.Tensor]:
        """The encoder's, every decoder layer's and the denoising queries' losses."""
        num_denoising = 0 if denoising is None else denoising.labels.shape[1]
        layers = [
            SetPrediction(logits, _cxcywh_to_pixel_xyxy(boxes, image_whwh))
            for logits, boxes in zip(output.decoder_logits, output.decoder_boxes)
        ]
        encoder = SetPrediction(
            output.encoder_logits, _cxcywh_to_pixel_xyxy(output.encoder_boxes, image_whwh)
        )
        matching = [
            SetPrediction(p.logits[:, num_denoising:], p.boxes[:, num_denoising:]) for p in layers
        ]
        normalizer = self.criterion.num_boxes_normalizer(targets, image_whwh.device)
        losses = self.criterion(
            [encoder] + matching,
            targets,
            image_whwh,
            normalizer=normalizer,
            suffixes=["_enc"] + [f"_layer{i}" for i in range(len(layers))],
            correlated=[False] + [True] * len(layers),
        )
        suffixes = [f"_dn_layer{i}" for i in range(len(layers))]
        if denoising is None:
            # No ground truth this step: the label embedding still joins the graph (DDP needs a
            # gradient for every parameter), with zero losses.
            zero = self.label_embedding.weight.sum() * 0.0
            losses.update({f"loss_{n}{s}": zero for n in ("cls", "bbox", "giou") for s in suffixes})
            return losses
        batch_targets = BatchTargets.cat(targets)
        for prediction, suffix in zip(layers, suffixes):
            losses.update(
                self.criterion.stage_losses(
                    SetPrediction(
                        prediction.logits[:, :num_denoising], prediction.boxes[:, :num_denoising]
                    ),
                    batch_targets,
                    image_whwh,
                    denoising.matches,
                    normalizer * denoising.num_groups,
                    suffix=suffix,
                    correlated=False,
                    prime_weighted=False,  # Align-DETR weighs denoising queries 1
                )
            )
        return losses
