"""CorrYOLACT: YOLACT (Bolya et al., ICCV 2019) with Correlation Loss, as the paper's code trains
it (fehmikahraman/CorrLoss ``configs/CorrLoss/yolact_r50_4x8_coco*.py``)."""

import math
from typing import Dict, List, NamedTuple, Tuple

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import batched_nms, cat
from detectron2.modeling import META_ARCH_REGISTRY, build_backbone
from detectron2.modeling.anchor_generator import build_anchor_generator
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.modeling.matcher import Matcher
from detectron2.modeling.meta_arch.dense_detector import DenseDetector
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import BitMasks, Boxes, ImageList, Instances, PolygonMasks, pairwise_iou
from detectron2.utils.events import get_event_storage
from torch import nn

from ...errors import ConfigError, DatasetError
from ...layers import assemble_masks, box_crop_mask, fast_nms
from ...losses import cropped_mask_loss, ohem_cross_entropy, semantic_segmentation_loss
from .. import candidates as candidate_recording
from ..backbone import backbone_feature_shapes
from ..correlation_term import CorrelationLoss, CorrelationSamples, matched_box_iou
from ..yolact_head import Protonet, YolactHead, xavier_conv
from .build import check_model_config
from .dense import anchor_levels

__all__ = ["CorrYOLACT"]

_MASK_CHUNK = 16  # masks upsampled to the output size at a time (bounds the float memory)


class YolactPositives(NamedTuple):
    """The P foreground anchors of a batch, in (image, anchor) row-major order. Not
    :class:`~.dense.DensePositives`: the mask loss needs anchor and ground-truth indices, and
    the scores are a softmax over all K + 1 logits rather than one sigmoid logit.

    image_index, anchor_index, gt_index: (P,) int64 image, anchor (over all levels) and index of
    the matched ground truth in its image. classes: (P,) its class. anchor_boxes, gt_boxes:
    (P, 4) XYXY. deltas: (P, 4) float32 predicted deltas (carry gradient). ious: (P,) IoU of the
    decoded deltas with the ground truth, detached, in [1e-6, 1]. level_index: (P,) FPN level.
    """

    image_index: torch.Tensor
    anchor_index: torch.Tensor
    gt_index: torch.Tensor
    classes: torch.Tensor
    anchor_boxes: torch.Tensor
    gt_boxes: torch.Tensor
    deltas: torch.Tensor
    ious: torch.Tensor
    level_index: torch.Tensor

    def correlation_samples(self, logits: torch.Tensor) -> CorrelationSamples:
        """The correlation term's samples: the float32 softmax probability of each positive's
        class among its anchor's ``logits`` ((N, R, K + 1), all levels), and ``ious``, by image
        and level."""
        scores = (
            logits[self.image_index, self.anchor_index]
            .float()
            .softmax(dim=-1)
            .gather(1, self.classes[:, None])[:, 0]
        )
        return CorrelationSamples(
            scores, self.ious, image_index=self.image_index, level_index=self.level_index
        )


@META_ARCH_REGISTRY.register()
class CorrYOLACT(DenseDetector):
    """YOLACT: anchors on P3-P7 whose shared head predicts softmax class scores, box deltas and
    mask coefficients; a protonet on the first feature gives the image's prototype masks, and a
    detection's mask is ``sigmoid(prototypes · coefficients)`` cropped to its box.

    Training losses (mmdetection's YOLACT, which the Correlation Loss code extends):
    ``loss_cls`` softmax cross-entropy of the positives and the 3x as many hardest negatives,
    ``loss_box_reg`` smooth L1 of the deltas, both over Σ_images max(#positives, 1);
    ``loss_mask`` per-positive BCE over its gt-box crop divided by the box area, averaged over the
    trained positives; ``loss_semantic`` per-class BCE of a 1x1 conv on the first feature;
    ``loss_corr`` λ·Σ_images (1 − ρ_image) between the softmax probability of each positive's
    class and the IoU of its decoded box (box IoU, as released; MODEL.CORR_LOSS).

    Inference: per level the TOPK_CANDIDATES_TEST anchors of best foreground score, Fast NMS (or
    greedy NMS), masks thresholded at the output size. Outputs ``pred_boxes``, ``scores``,
    ``pred_classes`` and ``pred_masks`` ((D, height, width) bool), as detectron2's instance
    segmentation models; while a correlation evaluation records, also ``"candidates"``: the
    (box, class) pairs above the score threshold that entered NMS.
    """

    NUM_CLASSES_KEY = "MODEL.YOLACT.NUM_CLASSES"

    @configurable
    def __init__(
        self,
        *,
        backbone: nn.Module,
        head: YolactHead,
        protonet: Protonet,
        semantic_head: nn.Module,
        head_in_features: List[str],
        prototype_stride: int,
        anchor_generator: nn.Module,
        box2box_transform: Box2BoxTransform,
        anchor_matcher: Matcher,
        num_classes: int,
        num_prototypes: int,
        correlation_loss: CorrelationLoss,
        neg_pos_ratio: float = 3.0,
        smooth_l1_beta: float = 1.0,
        box_loss_weight: float = 1.5,
        mask_loss_weight: float = 6.125,
        semantic_loss_weight: float = 1.0,
        max_masks_to_train: int = 100,
        mask_crop_padding: float = 1.0,
        test_topk_candidates: int = 1000,
        test_score_thresh: float = 0.05,
        test_nms_thresh: float = 0.5,
        test_nms_type: str = "fast",
        test_nms_top_k: int = 200,
        mask_threshold: float = 0.5,
        max_detections_per_image: int = 100,
        pixel_mean,
        pixel_std,
    ):
        """
        Args:
            head: per level (logits, deltas, coefficients); protonet: prototypes from the first
                of ``head_in_features``, at ``prototype_stride`` input pixels per cell.
            semantic_head: (N, C, H, W) feature -> (N, num_classes, H, W) logits (training only).
            anchor_matcher: labels anchors 0 background, -1 ignored, 1 foreground.
            The other arguments are the MODEL.YOLACT keys of the same meaning.
        """
        super().__init__(
            backbone, head, head_in_features, pixel_mean=pixel_mean, pixel_std=pixel_std
        )
        self.protonet = protonet
        self.semantic_head = semantic_head
        self.prototype_stride = prototype_stride
        self.anchor_generator = anchor_generator
        self.box2box_transform = box2box_transform
        self.anchor_matcher = anchor_matcher
        self.num_classes = num_classes
        self.num_prototypes = num_prototypes
        self.correlation_loss = correlation_loss
        self.neg_pos_ratio = neg_pos_ratio
        self.smooth_l1_beta = smooth_l1_beta
        self.box_loss_weight = box_loss_weight
        self.mask_loss_weight = mask_loss_weight
        self.semantic_loss_weight = semantic_loss_weight
        self.max_masks_to_train = max_masks_to_train
        self.mask_crop_padding = mask_crop_padding
        self.test_topk_candidates = test_topk_candidates
        self.test_score_thresh = test_score_thresh
        self.test_nms_thresh = test_nms_thresh
        self.test_nms_type = test_nms_type
        self.test_nms_top_k = test_nms_top_k
        self.mask_threshold = mask_threshold
        self.max_detections_per_image = max_detections_per_image

    @classmethod
    def from_config(cls, cfg):
        check_model_config(cfg)
        if not cfg.MODEL.MASK_ON:
            raise ConfigError(
                "cfg.MODEL.MASK_ON = False, but CorrYOLACT learns instance masks and needs them "
                "from the data loader: set MODEL.MASK_ON True (Base-CorrYOLACT.yaml does) and "
                "train on a dataset whose annotations have 'segmentation'"
            )
        node = cfg.MODEL.YOLACT
        backbone = build_backbone(cfg)
        shapes = backbone_feature_shapes(backbone, node.IN_FEATURES, "MODEL.YOLACT.IN_FEATURES")
        anchor_generator = build_anchor_generator(cfg, shapes)
        anchors_per_level = anchor_generator.num_anchors
        if len(set(anchors_per_level)) != 1:
            raise ConfigError(
                "cfg.MODEL.ANCHOR_GENERATOR gives a different number of anchors per location on "
                f"each level ({anchors_per_level}); YOLACT's head is shared by the levels: give "
                "every level as many sizes x aspect ratios"
            )
        channels = shapes[0].channels
        return {
            "backbone": backbone,
            "head": YolactHead(
                in_channels=channels,
                num_anchors=anchors_per_level[0],
                num_classes=node.NUM_CLASSES,
                num_prototypes=node.NUM_PROTOTYPES,
                num_convs=node.NUM_HEAD_CONVS,
            ),
            "protonet": Protonet(
                in_channels=channels,
                channels=node.PROTONET_DIM,
                num_prototypes=node.NUM_PROTOTYPES,
            ),
            "semantic_head": xavier_conv(channels, node.NUM_CLASSES, 1),
            "head_in_features": node.IN_FEATURES,
            "prototype_stride": shapes[0].stride // 2,  # the protonet upsamples x2
            "anchor_generator": anchor_generator,
            "box2box_transform": Box2BoxTransform(weights=node.BBOX_REG_WEIGHTS),
            "anchor_matcher": Matcher(
                node.IOU_THRESHOLDS, node.IOU_LABELS, allow_low_quality_matches=True
            ),
            "num_classes": node.NUM_CLASSES,
            "num_prototypes": node.NUM_PROTOTYPES,
            "correlation_loss": CorrelationLoss(
                cfg, default_group_by="image", default_group_reduction="sum"
            ),
            "neg_pos_ratio": node.NEG_POS_RATIO,
            "smooth_l1_beta": node.SMOOTH_L1_BETA,
            "box_loss_weight": node.BOX_LOSS_WEIGHT,
            "mask_loss_weight": node.MASK_LOSS_WEIGHT,
            "semantic_loss_weight": node.SEMANTIC_LOSS_WEIGHT,
            "max_masks_to_train": node.MAX_MASKS_TO_TRAIN,
            "mask_crop_padding": node.MASK_CROP_PADDING,
            "test_topk_candidates": node.TOPK_CANDIDATES_TEST,
            "test_score_thresh": node.SCORE_THRESH_TEST,
            "test_nms_thresh": node.NMS_THRESH_TEST,
            "test_nms_type": node.NMS_TYPE,
            "test_nms_top_k": node.NMS_TOP_K,
            "mask_threshold": node.MASK_THRESHOLD,
            "max_detections_per_image": cfg.TEST.DETECTIONS_PER_IMAGE,
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
        }

    # ---- training -------------------------------------------------------------------------

    def forward(self, batched_inputs: List[Dict[str, torch.Tensor]]):
        """detectron2's model interface (see :class:`DenseDetector`); in inference each
        ``"instances"`` also has ``pred_masks`` at the input's ``height`` x ``width``."""
        if self.training:
            _check_instance_masks(batched_inputs)
            return super().forward(batched_inputs)
        images = self.preprocess_image(batched_inputs)
        features = self.backbone(images.tensor)
        features = [features[f] for f in self.head_in_features]
        recording = candidate_recording.is_recording()
        detections, candidates = self.forward_inference(
            images, features, self.head(features), with_candidates=recording
        )
        outputs = []
        for image_detections, image_candidates, inputs, image_size in zip(
            detections, candidates, batched_inputs, images.image_sizes
        ):
            height = inputs.get("height", image_size[0])
            width = inputs.get("width", image_size[1])
            instances = detector_postprocess(image_detections, height, width)
            mask_probs = instances.get("mask_probs")
            instances.remove("mask_probs")
            instances.pred_masks = self.paste_masks(mask_probs, image_size, (height, width))
            output = {"instances": instances}
            if recording:
                output[candidate_recording.CANDIDATES_KEY] = detector_postprocess(
                    image_candidates, height, width
                )
            outputs.append(output)
        return outputs

    def forward_training(self, images: ImageList, features, predictions, gt_instances):
        logits, deltas, coefficients = self._transpose_dense_predictions(
            predictions, [self.num_classes + 1, 4, self.num_prototypes]
        )
        anchors = self.anchor_generator(features)
        gt_labels, matched_indices = self.label_anchors(anchors, gt_instances)
        gt_masks = [_padded_gt_masks(x, images.tensor.shape[-2:]) for x in gt_instances]
        return self.losses(
            anchors,
            cat(logits, dim=1),
            cat(deltas, dim=1),
            cat(coefficients, dim=1),
            self.protonet(features[0]),
            self.semantic_head(features[0]),
            gt_labels,
            matched_indices,
            gt_instances,
            gt_masks,
        )

    @torch.no_grad()
    def label_anchors(
        self, anchors: List[Boxes], gt_instances: List[Instances]
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """
        Returns:
            gt_labels: (N, R) int64 over all levels' anchors: -1 ignore, 0..K-1 the matched
                ground truth's class, K background.
            matched_indices: (N, R) int64 index of each anchor's ground truth in its image
                (meaningful where gt_labels is a class).
        """
        anchors = Boxes.cat(anchors)
        gt_labels, matched_indices = [], []
        for instances in gt_instances:
            matched, anchor_labels = self.anchor_matcher(pairwise_iou(instances.gt_boxes, anchors))
            if len(instances):
                labels = instances.gt_classes[matched].clone()
                labels[anchor_labels == 0] = self.num_classes
                labels[anchor_labels == -1] = -1
            else:
                labels = torch.full_like(matched, self.num_classes)
            gt_labels.append(labels)
            matched_indices.append(matched)
        return torch.stack(gt_labels), torch.stack(matched_indices)

    def losses(
        self,
        anchors: List[Boxes],
        logits: torch.Tensor,
        deltas: torch.Tensor,
        coefficients: torch.Tensor,
        prototypes: torch.Tensor,
        semantic_logits: torch.Tensor,
        gt_labels: torch.Tensor,
        matched_indices: torch.Tensor,
        gt_instances: List[Instances],
        gt_masks: List[torch.Tensor],
    ) -> Dict[str, torch.Tensor]:
        """
        Args:
            logits: (N, R, K + 1); deltas: (N, R, 4); coefficients: (N, R, k), all levels.
            prototypes: (N, k, Hp, Wp); semantic_logits: (N, K, H, W) on the first feature.
            gt_labels, matched_indices: of :meth:`label_anchors`.
            gt_masks: per image (G, H_pad, W_pad) float masks on the padded batch canvas.
        """
        positives = self.positive_samples(anchors, deltas, gt_labels, matched_indices, gt_instances)
        get_event_storage().put_scalar(
            "num_pos_anchors", len(positives.image_index) / len(gt_instances)
        )
        # Released: every image counts at least one positive, each process its own.
        positives_per_image = torch.bincount(positives.image_index, minlength=len(gt_instances))
        normalizer = positives_per_image.clamp(min=1).sum().item()
        loss_cls = sum(
            ohem_cross_entropy(
                image_logits,
                image_labels,
                background=self.num_classes,
                neg_pos_ratio=self.neg_pos_ratio,
            )
            for image_logits, image_labels in zip(logits, gt_labels)
        )
        loss_box = F.smooth_l1_loss(
            positives.deltas,
            self.box2box_transform.get_deltas(positives.anchor_boxes, positives.gt_boxes),
            beta=self.smooth_l1_beta,
            reduction="sum",
        )
        corr = self.correlation_loss(positives.correlation_samples(logits))
        semantic_targets = self.semantic_targets(gt_instances, gt_masks, semantic_logits)
        return {
            "loss_cls": loss_cls / normalizer,
            "loss_box_reg": self.box_loss_weight * loss_box / normalizer,
            "loss_mask": self.mask_loss_weight
            * self.mask_loss(coefficients, prototypes, positives, gt_masks),
            "loss_semantic": self.semantic_loss_weight
            * semantic_segmentation_loss(semantic_logits, semantic_targets),
            **corr,
        }

    def positive_samples(
        self,
        anchors: List[Boxes],
        deltas: torch.Tensor,
        gt_labels: torch.Tensor,
        matched_indices: torch.Tensor,
        gt_instances: List[Instances],
    ) -> YolactPositives:
        """The foreground anchors of the batch and what the losses need of them."""
        image_index, anchor_index = ((gt_labels >= 0) & (gt_labels != self.num_classes)).nonzero(
            as_tuple=True
        )
        gt_index = matched_indices[image_index, anchor_index]
        first_gt = F.pad(torch.tensor([len(x) for x in gt_instances]).cumsum(0), (1, 0))
        all_gt_boxes = cat([x.gt_boxes.tensor for x in gt_instances])
        gt_boxes = all_gt_boxes[first_gt.to(all_gt_boxes.device)[image_index] + gt_index]
        anchor_boxes = Boxes.cat(anchors).tensor[anchor_index]
        positive_deltas = deltas[image_index, anchor_index].float()
        with torch.no_grad():
            ious = matched_box_iou(
                self.box2box_transform.apply_deltas(positive_deltas, anchor_boxes), gt_boxes
            )
        return YolactPositives(
            image_index,
            anchor_index,
            gt_index,
            gt_labels[image_index, anchor_index],
            anchor_boxes,
            gt_boxes,
            positive_deltas,
            ious,
            anchor_levels(anchors)[anchor_index],
        )

    def mask_loss(
        self,
        coefficients: torch.Tensor,
        prototypes: torch.Tensor,
        positives: YolactPositives,
        gt_masks: List[torch.Tensor],
    ) -> torch.Tensor:
        """Mean over the trained positives (at most MAX_MASKS_TO_TRAIN per image, drawn at
        random) of :func:`cropped_mask_loss` on the prototype grid, each mask cropped to its
        ground-truth box (grown by MASK_CROP_PADDING cells)."""
        height, width = prototypes.shape[-2:]
        total, count = prototypes.sum() * 0 + coefficients.sum() * 0, 0  # connected: DDP
        for i, image_masks in enumerate(gt_masks):
            selected = (positives.image_index == i).nonzero()[:, 0]
            if len(selected) > self.max_masks_to_train:
                keep = torch.randperm(len(selected), device=selected.device)
                selected = selected[keep[: self.max_masks_to_train]]
            if not len(selected):
                continue
            with torch.no_grad():
                targets = _resize_masks(image_masks, (height, width))[positives.gt_index[selected]]
                boxes = positives.gt_boxes[selected] / self.prototype_stride
                crop = box_crop_mask(boxes, height, width, self.mask_crop_padding)
                areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
            mask_logits = assemble_masks(
                prototypes[i], coefficients[i, positives.anchor_index[selected]]
            )
            total = total + cropped_mask_loss(mask_logits, targets, crop, areas).sum()
            count += len(selected)
        return total / max(count, 1)

    @torch.no_grad()
    def semantic_targets(
        self, gt_instances: List[Instances], gt_masks: List[torch.Tensor], logits: torch.Tensor
    ) -> torch.Tensor:
        """(N, K, H, W) in {0, 1}: 1 where some instance of the class covers the cell."""
        height, width = logits.shape[-2:]
        targets = []
        for instances, masks in zip(gt_instances, gt_masks):
            masks = _resize_masks(masks, (height, width)).flatten(1)  # (G, H·W)
            classes = F.one_hot(instances.gt_classes, self.num_classes).t().to(masks.dtype)
            targets.append((classes @ masks).clamp(max=1).view(-1, height, width))
        return torch.stack(targets)

    # ---- inference ------------------------------------------------------------------------

    def forward_inference(
        self, images: ImageList, features, predictions, with_candidates: bool = False
    ):
        """
        Returns:
            detections: per image, Instances (input size) with ``pred_boxes``, ``scores``,
                ``pred_classes`` and ``mask_probs`` ((D, Hp, Wp) cropped mask probabilities on
                the prototype grid of the padded batch).
            candidates: per image, with ``with_candidates`` the (box, class) pairs above
                SCORE_THRESH_TEST that entered NMS (``pred_boxes``, ``scores``,
                ``pred_classes``), else None.
        """
        logits, deltas, coefficients = self._transpose_dense_predictions(
            predictions, [self.num_classes + 1, 4, self.num_prototypes]
        )
        anchors = self.anchor_generator(features)
        prototypes = self.protonet(features[0])
        detections, candidates = [], []
        for i, image_size in enumerate(images.image_sizes):
            boxes, scores, image_coefficients = self.candidate_boxes(
                anchors,
                [x[i] for x in logits],
                [x[i] for x in deltas],
                [x[i] for x in coefficients],
                image_size,
            )
            box_index, classes, kept_scores = self.nms(boxes, scores)
            result = Instances(image_size)
            result.pred_boxes = Boxes(boxes[box_index])
            result.scores = kept_scores
            result.pred_classes = classes
            mask_probs = torch.sigmoid(assemble_masks(prototypes[i], image_coefficients[box_index]))
            height, width = mask_probs.shape[-2:]
            crop = box_crop_mask(
                boxes[box_index] / self.prototype_stride, height, width, self.mask_crop_padding
            )
            result.mask_probs = mask_probs * crop
            detections.append(result)
            candidates.append(
                self._candidates(boxes, scores, image_size) if with_candidates else None
            )
        return detections, candidates

    def candidate_boxes(self, anchors, logits, deltas, coefficients, image_size):
        """Per level the TOPK_CANDIDATES_TEST anchors of best foreground probability, decoded and
        clipped to the image. Returns boxes (R, 4), scores (R, K), coefficients (R, k)."""
        boxes, scores, selected_coefficients = [], [], []
        for level_anchors, level_logits, level_deltas, level_coefficients in zip(
            anchors, logits, deltas, coefficients
        ):
            probabilities = level_logits.float().softmax(dim=-1)[:, : self.num_classes]
            k = min(self.test_topk_candidates, len(probabilities))
            keep = probabilities.max(dim=1).values.topk(k).indices
            level_boxes = Boxes(
                self.box2box_transform.apply_deltas(
                    level_deltas[keep].float(), level_anchors.tensor[keep]
                )
            )
            level_boxes.clip(image_size)
            boxes.append(level_boxes.tensor)
            scores.append(probabilities[keep])
            selected_coefficients.append(level_coefficients[keep])
        return cat(boxes), cat(scores), cat(selected_coefficients)

    def nms(self, boxes: torch.Tensor, scores: torch.Tensor):
        """(box index, class, score) of the kept detections, best first (NMS_TYPE)."""
        if self.test_nms_type == "fast":
            return fast_nms(
                boxes,
                scores,
                iou_threshold=self.test_nms_thresh,
                score_threshold=self.test_score_thresh,
                top_k=self.test_nms_top_k,
                max_detections=self.max_detections_per_image,
            )
        box_index, classes, pair_scores = self._pairs_above_threshold(scores)
        keep = batched_nms(boxes[box_index], pair_scores, classes, self.test_nms_thresh)
        keep = keep[: self.max_detections_per_image]
        return box_index[keep], classes[keep], pair_scores[keep]

    def _pairs_above_threshold(self, scores: torch.Tensor):
        """(box index, class, score) of the (R, K) scores above SCORE_THRESH_TEST."""
        box_index, classes = (scores > self.test_score_thresh).nonzero(as_tuple=True)
        return box_index, classes, scores[box_index, classes]

    def _candidates(self, boxes, scores, image_size) -> Instances:
        box_index, classes, pair_scores = self._pairs_above_threshold(scores)
        candidates = Instances(image_size)
        candidates.pred_boxes = Boxes(boxes[box_index])
        candidates.scores = pair_scores
        candidates.pred_classes = classes
        return candidates

    def paste_masks(
        self, mask_probs: torch.Tensor, input_size: Tuple[int, int], output_size: Tuple[int, int]
    ) -> torch.Tensor:
        """(D, height, width) bool masks at the output size from (D, Hp, Wp) probabilities on the
        prototype grid (which covers the padded input, ``prototype_stride`` pixels a cell):
        bilinear upsampling, then MASK_THRESHOLD."""
        height, width = output_size
        scale_y, scale_x = height / input_size[0], width / input_size[1]
        grid_height, grid_width = mask_probs.shape[-2:]
        size = (
            math.ceil(grid_height * self.prototype_stride * scale_y),
            math.ceil(grid_width * self.prototype_stride * scale_x),
        )
        masks = torch.empty(
            (len(mask_probs), height, width), dtype=torch.bool, device=mask_probs.device
        )
        for start in range(0, len(mask_probs), _MASK_CHUNK):
            chunk = mask_probs[start : start + _MASK_CHUNK, None]
            upsampled = F.interpolate(chunk, size=size, mode="bilinear", align_corners=False)
            masks[start : start + _MASK_CHUNK] = (
                upsampled[:, 0, :height, :width] > self.mask_threshold
            )
        return masks


def _check_instance_masks(batched_inputs) -> None:
    for inputs in batched_inputs:
        instances = inputs.get("instances")
        if instances is not None and len(instances) and not instances.has("gt_masks"):
            raise DatasetError(
                f"{inputs.get('file_name', 'a training image')} has boxes without instance masks; "
                "CorrYOLACT trains on masks: give every annotation a 'segmentation' (polygons "
                "or RLE), and set INPUT.MASK_FORMAT to 'bitmask' for RLE"
            )


@torch.no_grad()
def _padded_gt_masks(instances: Instances, padded_size) -> torch.Tensor:
    """(G, H_pad, W_pad) float32 masks of an image's instances on the padded batch canvas."""
    masks = instances.gt_masks if instances.has("gt_masks") else None
    height, width = instances.image_size
    if masks is None:  # an image without instances
        return torch.zeros((0, *padded_size), device=instances.gt_boxes.device)
    if isinstance(masks, PolygonMasks):
        masks = BitMasks.from_polygon_masks(masks, height, width)
    tensor = masks.tensor.to(device=instances.gt_boxes.device, dtype=torch.float32)
    return F.pad(
        tensor, (0, padded_size[1] - tensor.shape[-1], 0, padded_size[0] - tensor.shape[-2])
    )


def _resize_masks(masks: torch.Tensor, size) -> torch.Tensor:
    """(G, H, W) {0, 1} masks resized bilinearly to ``size`` and thresholded at 0.5 (as
    released)."""
    if not len(masks):
        return masks.new_zeros((0, *size))
    resized = F.interpolate(masks[:, None], size=tuple(size), mode="bilinear", align_corners=False)
    return (resized[:, 0] > 0.5).to(masks.dtype)
