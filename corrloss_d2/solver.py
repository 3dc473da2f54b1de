"""The optimiser ``train_net.py`` builds: detectron2's SGD recipe, or AdamW with a backbone
learning-rate multiplier and full-model gradient clipping (Sparse R-CNN's recipe)."""

from typing import Iterable, Optional, Type

import torch
from detectron2.solver.build import get_default_optimizer_params, maybe_add_gradient_clipping
from detectron2.utils.events import get_event_storage

__all__ = ["build_optimizer", "with_full_model_gradient_clipping"]


def _current_iteration() -> Optional[int]:
    try:
        return get_event_storage().iter
    except AssertionError:  # no EventStorage: the optimiser is used outside a detectron2 trainer
        return None


def with_full_model_gradient_clipping(
    optimizer_type: Type[torch.optim.Optimizer], max_norm: float, norm_type: float = 2.0
) -> Type[torch.optim.Optimizer]:
    """A subclass of ``optimizer_type`` whose ``step`` first rescales all gradients together so
    that their joint ``norm_type``-norm is at most ``max_norm`` (detectron2's own clipping works
    per parameter). A non-finite joint norm raises FloatingPointError naming the iteration
    instead of writing NaN into the weights."""

    class FullModelGradientClipping(optimizer_type):
        def step(self, closure=None):
            params: Iterable[torch.Tensor] = [p for g in self.param_groups for p in g["params"]]
            total_norm = torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type)
            if not torch.isfinite(total_norm):
                iteration = _current_iteration()
                where = "" if iteration is None else f" at iteration {iteration}"
                raise FloatingPointError(
                    f"the gradient norm became {total_norm.item()}{where}: training diverged. "
                    "Lower SOLVER.BASE_LR or SOLVER.CLIP_GRADIENTS.CLIP_VALUE."
                )
            return super().step(closure)

    FullModelGradientClipping.__name__ = f"{optimizer_type.__name__}WithFullModelGradientClipping"
    return FullModelGradientClipping


def build_optimizer(cfg, model: torch.nn.Module) -> torch.optim.Optimizer:
    """``SOLVER.OPTIMIZER`` "SGD" (detectron2's build_optimizer: momentum, nesterov) or "ADAMW",
    both with detectron2's parameter groups (``WEIGHT_DECAY_NORM``, ``BIAS_LR_FACTOR``,
    ``WEIGHT_DECAY_BIAS``), the learning rate of parameters under ``model.backbone`` times
    ``SOLVER.BACKBONE_MULTIPLIER``, and ``SOLVER.CLIP_GRADIENTS`` (CLIP_TYPE "value", "norm" or
    "full_model")."""
    solver = cfg.SOLVER
    multiplier = solver.BACKBONE_MULTIPLIER
    params = get_default_optimizer_params(
        model,
        base_lr=solver.BASE_LR,
        weight_decay_norm=solver.WEIGHT_DECAY_NORM,
        bias_lr_factor=solver.BIAS_LR_FACTOR,
        weight_decay_bias=solver.WEIGHT_DECAY_BIAS,
        lr_factor_func=lambda name: multiplier if name.startswith("backbone.") else 1.0,
    )
    if solver.OPTIMIZER == "SGD":
        optimizer_type = torch.optim.SGD
        kwargs = {"momentum": solver.MOMENTUM, "nesterov": solver.NESTEROV, "foreach": True}
    else:
        optimizer_type, kwargs = torch.optim.AdamW, {"foreach": True}
    clip = solver.CLIP_GRADIENTS
    if clip.ENABLED and clip.CLIP_TYPE == "full_model":
        optimizer_type = with_full_model_gradient_clipping(
            optimizer_type, clip.CLIP_VALUE, clip.NORM_TYPE
        )
    else:
        optimizer_type = maybe_add_gradient_clipping(cfg, optimizer_type)
    return optimizer_type(params, lr=solver.BASE_LR, weight_decay=solver.WEIGHT_DECAY, **kwargs)
