"""The classification loss of every corrloss_d2 detector: focal, IA-BCE, QFL or VFL
(MODEL.CLS_LOSS), from the head's logits, in float32."""

import torch
from detectron2.config import configurable
from fvcore.nn import sigmoid_focal_loss
from torch import nn
from torch.nn import functional as F

from ..losses import CLASSIFICATION_LOSS_KINDS, IOU_AWARE_LOSSES

__all__ = ["ClassificationLoss"]


class ClassificationLoss(nn.Module):
    """Sigmoid classification loss of a detector: focal, IA-BCE, QFL or VFL.

    Called as ``loss(logits (M, K), labels (M,), ious (M,) or None, normalizer, weights=None)``
    with labels ``0..K-1`` foreground and ``K`` background (no ignored rows), ``ious`` read at
    foreground rows (needed when :attr:`uses_ious`), and ``weights`` (M,) Align-DETR prime-sample
    weights of the IA-BCE target (only for "ia_bce").
    """

    @configurable
    def __init__(
        self,
        *,
        kind: str = "focal",
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        ia_bce_alpha: float = 0.25,
        ia_bce_gamma: float = 2.0,
        qfl_beta: float = 2.0,
        vfl_alpha: float = 0.75,
        vfl_gamma: float = 2.0,
    ):
        super().__init__()
        self.kind = kind
        self.focal_alpha, self.focal_gamma = focal_alpha, focal_gamma
        self.options = {
            "ia_bce": {"alpha": ia_bce_alpha, "gamma": ia_bce_gamma},
            "qfl": {"beta": qfl_beta},
            "vfl": {"alpha": vfl_alpha, "gamma": vfl_gamma},
        }
        if kind not in CLASSIFICATION_LOSS_KINDS:
            raise ValueError(
                f"classification loss must be one of {', '.join(CLASSIFICATION_LOSS_KINDS)}; "
                f"got {kind!r}"
            )

    @classmethod
    def from_config(cls, cfg, *, focal_alpha: float, focal_gamma: float):
        c = cfg.MODEL.CLS_LOSS
        return {
            "kind": c.TYPE,
            "focal_alpha": focal_alpha,
            "focal_gamma": focal_gamma,
            "ia_bce_alpha": c.IA_BCE_ALPHA,
            "ia_bce_gamma": c.IA_BCE_GAMMA,
            "qfl_beta": c.QFL_BETA,
            "vfl_alpha": c.VFL_ALPHA,
            "vfl_gamma": c.VFL_GAMMA,
        }

    def extra_repr(self) -> str:
        return f"kind={self.kind}"

    @property
    def uses_ious(self) -> bool:
        """False for focal loss, which ignores ``ious`` (callers may pass None)."""
        return self.kind != "focal"

    def forward(self, logits, labels, ious, normalizer, weights=None) -> torch.Tensor:
        if weights is not None and self.kind != "ia_bce":
            raise ValueError(
                f"prime-sample weights scale the IA-BCE target; the {self.kind!r} "
                "classification loss takes none"
            )
        # In float32 (or wider) whatever the head's precision (mixed-precision training).
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
        if self.kind == "focal":  # detectron2's RetinaNet / FCOS classification loss
            target = F.one_hot(labels, num_classes=logits.shape[-1] + 1)[:, :-1].to(logits.dtype)
            # fvcore's eager function, not its TorchScript copy (sigmoid_focal_loss_jit) that
            # detectron2 calls: TorchScript's profiling executor differentiates a scripted
            # function with other formulas from its second call on, so the first training step
            # of a process (a resumed run's) would round its gradients differently.
            return (
                sigmoid_focal_loss(
                    logits, target, alpha=self.focal_alpha, gamma=self.focal_gamma, reduction="sum"
                )
                / normalizer
            )
        options = (
            self.options[self.kind]
            if weights is None
            else {**self.options[self.kind], "weights": weights}
        )
        return IOU_AWARE_LOSSES[self.kind](logits, labels, ious, normalizer=normalizer, **options)
