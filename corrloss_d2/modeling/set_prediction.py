"""What the NMS-free, query-based detectors (Sparse R-CNN, the DETR family) share outside their
losses: one stage's or decoder layer's predictions, and the top-k inference over them.

Conventions: B images, N queries (proposals), K classes. Boxes are XYXY in the pixels of the
(resized) input image.
"""

from typing import Dict, List, NamedTuple, Tuple

import torch
from detectron2.structures import Boxes, Instances

__all__ = ["SetPrediction", "top_k_detections"]


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
