"""Behaviour of the detectron2 install the project set up: compiled ops present, or clear errors."""

import pytest
import torch

import corrloss_d2  # noqa: F401  (registers the placeholders where needed)
from corrloss_d2.compiled_ops import (
    MissingCompiledOpError,
    check_config_compiled_ops,
    has_compiled_ops,
)

needs_fallback = pytest.mark.skipif(
    has_compiled_ops(), reason="detectron2 has its compiled ops here"
)


@needs_fallback
def test_rotated_ops_name_the_op_and_the_fix():
    from detectron2.layers import nms_rotated
    from detectron2.structures import RotatedBoxes, pairwise_iou_rotated

    boxes = torch.tensor([[10.0, 10.0, 4.0, 4.0, 0.0], [11.0, 10.0, 4.0, 4.0, 30.0]])
    with pytest.raises(MissingCompiledOpError, match="'nms_rotated'.*official detectron2"):
        nms_rotated(boxes, torch.tensor([0.9, 0.8]), 0.5)
    with pytest.raises(MissingCompiledOpError, match="'box_iou_rotated'"):
        pairwise_iou_rotated(RotatedBoxes(boxes), RotatedBoxes(boxes))


@needs_fallback
def test_deformable_config_is_rejected_with_the_key():
    from detectron2.config import get_cfg

    cfg = get_cfg()
    check_config_compiled_ops(cfg)  # the default config needs no compiled op
    cfg.MODEL.RESNETS.DEFORM_ON_PER_STAGE = [False, True, True, True]
    with pytest.raises(MissingCompiledOpError, match="DEFORM_ON_PER_STAGE"):
        check_config_compiled_ops(cfg)


def test_compiled_ops_are_detected_as_the_install_has_them():
    """has_compiled_ops() decides between detectron2's fast paths and the clear errors above."""
    try:
        import detectron2._C  # noqa: F401
    except ImportError:
        importable = False
    else:
        importable = True
    assert has_compiled_ops() == importable
