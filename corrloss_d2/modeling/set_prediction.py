"""What the NMS-free, query-based detectors (Sparse R-CNN, the DETR family) share outside their
losses: one stage's or decoder layer's predictions, the top-k inference over them, and the base
of their meta-architectures.

Conventions: B images, N queries (proposals), K classes. Boxes are XYXY in the pixels of the
(resized) input image.
"""

from typing import Dict, List, NamedTuple, Tuple

import torch
from detectron2.structures import Boxes, ImageList, Instances
from torch import nn

from .correlation_term import CorrelationLoss

__all__ = ["SetPrediction", "SetPredictionDetector", "top_k_detections"]


class SetPrediction(NamedTuple):
    """One stage's (or decoder layer's) predictions: logits (B, N, K), boxes (B, N, 4)."""

    logits: torch.Tensor
    boxes: torch.Tensor


def top_k_detections(
    prediction: SetPrediction,
    image_sizes: List[Tuple[int, int]],
    batched_inputs: List[Dict],
    max_detections_per_image: int,
) -> List[Dict[str, Instances]]:
    """The top-k (query, class) pairs by sigmoid score of each image, no NMS: exactly
    ``min(max_detections_per_image, N·K)`` detections sorted by score, boxes clipped to the input
    image (``image_sizes``, (height, width)) and scaled to the requested output size
    (``height``/``width`` of the image's input dict)."""
    num_classes = prediction.logits.shape[-1]
    scores = torch.sigmoid(prediction.logits.float()).flatten(1)  # (B, N·K)
    k = min(max_detections_per_image, scores.shape[1])
    top_scores, top_index = scores.topk(k, dim=1)
    results = []
    for i, (size, inputs) in enumerate(zip(image_sizes, batched_inputs)):
        boxes = Boxes(prediction.boxes[i, top_index[i] // num_classes].float())
        boxes.clip(size)
        height, width = inputs.get("height", size[0]), inputs.get("width", size[1])
        boxes.scale(width / size[1], height / size[0])
        instances = Instances(
            (height, width),
            pred_boxes=boxes,
            scores=top_scores[i],
            pred_classes=top_index[i] % num_classes,
        )
        results.append({"instances": instances})
    return results


class SetPredictionDetector(nn.Module):
    """Base of the query-based meta-architectures: a backbone, a criterion (whose Correlation
    Loss the detector exposes), input normalisation as in detectron2's detectors, and the top-k
    inference of :func:`top_k_detections`."""

    def __init__(
        self,
        *,
        backbone: nn.Module,
        criterion: nn.Module,
        max_detections_per_image: int,
        pixel_mean: Tuple[float, ...],
        pixel_std: Tuple[float, ...],
    ):
        """
        Args:
            criterion: the training losses, with a ``correlation_loss`` module.
            max_detections_per_image: k of the inference top-k.
            pixel_mean, pixel_std: input normalisation.
        """
        super().__init__()
        self.backbone = backbone
        self.criterion = criterion
        self.max_detections_per_image = max_detections_per_image
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    @property
    def correlation_loss(self) -> CorrelationLoss:
        """The module every stage's (decoder layer's) Correlation Loss goes through."""
        return self.criterion.correlation_loss

    def preprocess_image(self, batched_inputs: List[Dict]) -> ImageList:
        images = [
            (x["image"].to(self.device) - self.pixel_mean) / self.pixel_std for x in batched_inputs
        ]
        return ImageList.from_tensors(images, self.backbone.size_divisibility)

    def image_whwh(self, images: ImageList) -> torch.Tensor:
        """(B, 4) float32 width, height, width, height of each (unpadded) input image."""
        return torch.tensor(
            [[w, h, w, h] for h, w in images.image_sizes], dtype=torch.float32, device=self.device
        )

    def detections(
        self, prediction: SetPrediction, images: ImageList, batched_inputs: List[Dict]
    ) -> List[Dict[str, Instances]]:
        """The inference output of the last stage's ``prediction`` (XYXY input pixels)."""
        return top_k_detections(
            prediction, images.image_sizes, batched_inputs, self.max_detections_per_image
        )
