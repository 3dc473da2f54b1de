"""detectron2's compiled ops (``detectron2._C``): detection, and clear errors where they are absent.

The pure-Python detectron2 fallback (docs/install.md, "Installing detectron2") has no ``_C``.
detectron2 itself degrades gracefully for the fast COCO evaluation (it uses pycocotools) but not
for the rotated-box ops (an obscure "no such operator detectron2::..." deep inside a call) or for
deformable convolution (a generic "not compiled" ImportError). Importing corrloss_d2 registers
placeholders for the rotated-box operators that raise :class:`MissingCompiledOpError`, and
:func:`check_config_compiled_ops` rejects configs that need deformable convolution, naming the key.
"""

import importlib.util
from typing import Callable

import torch

__all__ = [
    "MissingCompiledOpError",
    "has_compiled_ops",
    "check_config_compiled_ops",
    "register_missing_op_placeholders",
]

HOW_TO_GET_THEM = (
    "This environment uses the pure-Python fallback of detectron2, which has no compiled ops. "
    "Install the official detectron2 from source instead: "
    "`pip install --no-build-isolation 'git+https://github.com/facebookresearch/detectron2.git'`, "
    "or re-run `CORRLOSS_DETECTRON2=official bash tools/setup_env.sh` on a machine that reaches "
    "that repository (docs/install.md, 'Installing detectron2')."
)

# Operators that detectron2's C++ extension registers under torch.ops.detectron2, with the Python
# entry points that reach them.
_TORCH_OPS = {
    "nms_rotated": (
        "(Tensor boxes, Tensor scores, float iou_threshold) -> Tensor",
        "detectron2.layers.nms_rotated / batched_nms_rotated",
    ),
    "box_iou_rotated": (
        "(Tensor boxes1, Tensor boxes2) -> Tensor",
        "detectron2.structures.pairwise_iou_rotated (RotatedBoxes)",
    ),
    "roi_align_rotated_forward": (
        "(Tensor input, Tensor rois, float spatial_scale, int pooled_height, int pooled_width, "
        "int sampling_ratio) -> Tensor",
        "detectron2.layers.ROIAlignRotated",
    ),
    "roi_align_rotated_backward": (
        "(Tensor grad, Tensor rois, float spatial_scale, int pooled_height, int pooled_width, "
        "int batch_size, int channels, int height, int width, int sampling_ratio) -> Tensor",
        "detectron2.layers.ROIAlignRotated",
    ),
}

_placeholder_library = None  # kept alive: dropping a torch.library.Library unregisters its ops


class MissingCompiledOpError(RuntimeError):
    """A detectron2 compiled op was needed but this detectron2 install has none."""


def has_compiled_ops() -> bool:
    """Whether ``detectron2._C`` is importable (official build)."""
    if importlib.util.find_spec("detectron2") is None:
        return False
    try:
        import detectron2._C  # noqa: F401
    except ImportError:
        return False
    return True


def missing_op_error(op: str, needed_by: str) -> MissingCompiledOpError:
    return MissingCompiledOpError(
        f"detectron2 compiled op '{op}' is not available (needed by {needed_by}). {HOW_TO_GET_THEM}"
    )


def _raiser(op: str, needed_by: str) -> Callable:
    def raise_missing(*args, **kwargs):
        raise missing_op_error(op, needed_by)

    return raise_missing


def register_missing_op_placeholders() -> None:
    """Registers torch.ops.detectron2.* placeholders that raise a clear error, only where
    detectron2's compiled extension is absent. Idempotent."""
    global _placeholder_library
    if _placeholder_library is not None or has_compiled_ops():
        return
    library = torch.library.Library("detectron2", "DEF")
    for op, (schema, needed_by) in _TORCH_OPS.items():
        library.define(op + schema)
        library.impl(op, _raiser(op, needed_by), "CompositeExplicitAutograd")
    _placeholder_library = library


def check_config_compiled_ops(cfg) -> None:
    """Raises :class:`MissingCompiledOpError` naming the config key when ``cfg`` needs a compiled
    op this install lacks (deformable convolution in the ResNet backbone)."""
    if has_compiled_ops():
        return
    resnets = cfg.MODEL.get("RESNETS", None)
    if resnets is not None and any(resnets.get("DEFORM_ON_PER_STAGE", [])):
        raise missing_op_error(
            "deform_conv",
            f"MODEL.RESNETS.DEFORM_ON_PER_STAGE={list(resnets.DEFORM_ON_PER_STAGE)}; "
            "set it to [False, False, False, False] to run without deformable convolution",
        )
