"""Pre-NMS candidates: the models' side of their contract with
:class:`~corrloss_d2.evaluation.CorrelationEvaluator` (it lives with the models, which need it
without importing the evaluation).

The image-level correlation (SPEC §1.1) is measured on a detector's detections *before* NMS,
which a detectron2 evaluator never sees: ``process(inputs, outputs)`` gets the final outputs only.
The protocol, for authors of meta-architectures:

1. ``CorrelationEvaluator.reset()`` calls :func:`start_recording` and ``evaluate()`` calls
   :func:`stop_recording`, so :func:`is_recording` is True exactly while a correlation evaluation
   runs in this process (each process of a multi-process evaluation has its own evaluator).
2. A meta-architecture in eval mode that applies NMS checks :func:`is_recording` once per
   ``forward`` and, only when it is True, adds to each output dict
   ``"candidates"``: an ``Instances`` with ``pred_boxes`` (Boxes, XYXY), ``scores`` (R,) and
   ``pred_classes`` (R,) of the detections that entered NMS, in the same coordinates as
   ``"instances"`` (after ``detector_postprocess``). The other outputs must not change.
   ``CorrRetinaNet`` and ``CorrFCOS`` do it in ``CorrelationAwareDenseMixin.forward``.
3. An NMS-free detector (``CorrSparseRCNN``) adds nothing: the evaluator then takes
   ``"instances"`` as the candidates, since its outputs are what it ranks.

When no correlation evaluation runs, the cost is one function call per forward.
"""

from typing import Set

__all__ = ["start_recording", "stop_recording", "is_recording", "CANDIDATES_KEY"]

CANDIDATES_KEY = "candidates"

_recorders: Set[int] = set()  # ids of the evaluators that are recording in this process


def start_recording(owner: object) -> None:
    """Asks meta-architectures to add pre-NMS candidates to their outputs until
    :func:`stop_recording` is called with the same ``owner``."""
    _recorders.add(id(owner))


def stop_recording(owner: object) -> None:
    _recorders.discard(id(owner))


def is_recording() -> bool:
    """Whether some evaluator in this process wants pre-NMS candidates."""
    return bool(_recorders)
