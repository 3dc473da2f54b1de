"""Correlation Loss (Kahraman, Oksuz, Kalkan, Akbas, AAAI 2023): ``1 - rho(scores, IoUs)``.

Correlation coefficients are computed per group (image, FPN level, decoder stage, class, or the
whole batch) with segment reductions, so any number of groups costs one pass.
"""

from typing import NamedTuple, Optional

import torch

from .distributed import gather_samples
from .soft_rank import grouped_soft_rank

__all__ = [
    "CORRELATION_KINDS",
    "GroupedCorrelation",
    "correlation_coefficients",
    "correlation_loss",
]

CORRELATION_KINDS = ("pearson", "concordance", "spearman")


class GroupedCorrelation(NamedTuple):
    """Per-group correlation coefficients.

    rho: (G,) coefficient per group; 0 where the group is not valid.
    valid: (G,) bool, True where the group has at least ``min_samples`` samples and neither the
        scores nor the IoUs are constant.
    num_samples: (G,) int64 samples per group.
    """

    rho: torch.Tensor
    valid: torch.Tensor
    num_samples: torch.Tensor

    def loss(self, reduction: str = "mean") -> torch.Tensor:
        """``1 - rho`` of the valid groups, averaged (``"mean"``) or summed (``"sum"``, YOLACT's
        released per-image terms); a connected zero when there is no valid group."""
        valid = self.valid.to(self.rho.dtype)
        total = ((1 - self.rho) * valid).sum()
        if reduction == "sum":
            return total
        if reduction != "mean":
            raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
        return total / valid.sum().clamp(min=1)


def _validate(scores, ious, kind, groups, strength, min_samples) -> None:
    if kind not in CORRELATION_KINDS:
        raise ValueError(f"correlation kind must be one of {CORRELATION_KINDS}, got {kind!r}")
    if not isinstance(scores, torch.Tensor) or not scores.is_floating_point() or scores.dim() != 1:
        raise ValueError(
            "scores must be a 1-D floating-point tensor (N,) of probabilities of the "
            f"ground-truth class, got {getattr(scores, 'shape', type(scores))}"
        )
    if not isinstance(ious, torch.Tensor) or ious.shape != scores.shape:
        raise ValueError(
            f"ious must be a tensor of the shape of scores {tuple(scores.shape)}, "
            f"got {tuple(getattr(ious, 'shape', ()))}"
        )
    if groups is not None and (
        groups.dim() not in (1, 2)
        or groups.shape[0] != scores.shape[0]
        or groups.is_floating_point()
    ):
        raise ValueError(
            f"groups must be an integer tensor (N,) or (N, C) with N = {scores.shape[0]}, "
            f"the number of scores, got {groups.dtype} {tuple(groups.shape)}"
        )
    if not isinstance(min_samples, int) or min_samples < 2:
        raise ValueError(
            f"min_samples must be an integer >= 2 (a correlation needs two samples), "
            f"got {min_samples!r}"
        )
    if not strength > 0:
        raise ValueError(f"soft-rank strength must be positive, got {strength!r}")


def _group_sum(values, index, num_groups):
    """(G,) sums of ``values`` (N,) per group; one group is a plain (faster) reduction."""
    if num_groups == 1:
        return values.sum(0, keepdim=True)
    return values.new_zeros(num_groups).index_add(0, index, values)


def _pearson_per_group(x, y, index, num_groups, count, eps):
    """Population moments per group (two-pass, centred); x carries the gradient.

    Returns (cov, var_x, var_y, mean_x, mean_y, nonconstant), each (G,)."""
    mean_x = _group_sum(x, index, num_groups) / count
    mean_y = _group_sum(y, index, num_groups) / count
    dx = x - (mean_x if num_groups == 1 else mean_x[index])
    dy = y - (mean_y if num_groups == 1 else mean_y[index])
    var_x = _group_sum(dx * dx, index, num_groups) / count
    var_y = _group_sum(dy * dy, index, num_groups) / count
    cov = _group_sum(dx * dy, index, num_groups) / count
    nonconstant = (var_x.detach() > eps) & (var_y > eps)
    return cov, var_x, var_y, mean_x, mean_y, nonconstant


def correlation_coefficients(
    scores: torch.Tensor,
    ious: torch.Tensor,
    kind: str,
    *,
    groups: Optional[torch.Tensor] = None,
    strength: float = 1.0,
    min_samples: int = 2,
    gather_across_processes: bool = False,
    process_group: Optional[object] = None,
    eps: float = 1e-10,
) -> GroupedCorrelation:
    """Correlation between scores and IoUs within each group.

    Args:
        scores: (N,) probabilities of the ground-truth class at the positives; receives gradient.
        ious: (N,) IoU of each positive's predicted box with its ground-truth box; detached here,
            treated as a constant target.
        kind: "pearson", "concordance" (Lin's CCC, which also matches mean and scale of the
            scores to the IoUs) or "spearman" (Pearson of soft ranks).
        groups: (N,) integer group id per sample (any values; compared for equality), or (N, C)
            integer keys (a row per sample, e.g. image and level; rows compared for equality,
            groups ordered lexicographically), or None for one group. With
            ``gather_across_processes`` ids are pooled across processes, so make per-image ids
            unique per process (e.g. a key column holding the process's rank).
        strength: soft-rank strength for "spearman". The paper's code uses 1.0, which on [0, 1]
            inputs makes "spearman" identical to "pearson" (see :func:`soft_rank`); a strength well
            below ``2 / N`` gives a true rank correlation.
        min_samples: groups with fewer samples are not valid.
        gather_across_processes: pool the samples of the processes of ``process_group``
            (torch.distributed; all processes when it is None) before computing rho; the
            gradient reaching local samples is exact under DDP averaging.
        process_group: the group to pool with (this process belongs to it), or None.
        eps: groups whose score or IoU variance is at most ``eps`` are not valid (a constant
            carries no correlation and would divide by zero).
    Returns:
        :class:`GroupedCorrelation`; computed in at least float32, whatever the input dtype.
    """
    _validate(scores, ious, kind, groups, strength, min_samples)
    dtype = torch.promote_types(scores.dtype, torch.float32)
    with torch.autocast(device_type=scores.device.type, enabled=False):
        x = scores.to(dtype)
        y = ious.detach().to(dtype)
        single_group = groups is None
        if single_group:
            groups = torch.zeros(x.shape, dtype=torch.int64, device=x.device)
        if gather_across_processes:
            x, y, *columns = gather_samples(
                x, y, *groups.reshape(len(x), -1).unbind(1), group=process_group
            )
            groups = torch.stack(columns, dim=1) if groups.dim() == 2 else columns[0]
        if single_group:  # no counting pass over the samples: their number is the count
            index, num_groups = groups, 1
            num_samples = torch.full((1,), x.shape[0], dtype=torch.int64, device=x.device)
        else:
            group_ids, index = torch.unique(groups, dim=0, return_inverse=True)
            num_groups = group_ids.shape[0]
            num_samples = torch.bincount(index, minlength=num_groups)
        count = num_samples.to(dtype).clamp(min=1)
        if kind == "spearman":
            x = grouped_soft_rank(x, index, num_groups, strength, centered=True)
            y = grouped_soft_rank(y, index, num_groups, strength, centered=True)
        cov, var_x, var_y, mean_x, mean_y, nonconstant = _pearson_per_group(
            x, y, index, num_groups, count, eps
        )
        valid = (num_samples >= min_samples) & nonconstant
        if kind == "concordance":
            denominator = var_x + var_y + (mean_x - mean_y) ** 2
            numerator = 2 * cov
        else:
            denominator = (var_x * var_y).clamp(min=0).sqrt()
            numerator = cov
        # Invalid groups divide by 1 so that neither value nor gradient can become NaN.
        safe_denominator = torch.where(valid, denominator, torch.ones_like(denominator))
        rho = torch.where(valid, numerator / safe_denominator, torch.zeros_like(numerator))
    return GroupedCorrelation(rho=rho, valid=valid, num_samples=num_samples)


def correlation_loss(
    scores: torch.Tensor,
    ious: torch.Tensor,
    kind: str,
    *,
    groups: Optional[torch.Tensor] = None,
    strength: float = 1.0,
    min_samples: int = 2,
    gather_across_processes: bool = False,
    process_group: Optional[object] = None,
) -> torch.Tensor:
    """``1 - mean rho`` over the valid groups (see :func:`correlation_coefficients`).

    With no valid group (empty input, fewer than ``min_samples`` samples, constant scores or IoUs)
    the loss is a zero that stays connected to the graph of ``scores``, never NaN or inf.

    Returns:
        scalar float32 (float64 for float64 scores) tensor in [0, 2].
    """
    return correlation_coefficients(
        scores,
        ious,
        kind,
        groups=groups,
        strength=strength,
        min_samples=min_samples,
        gather_across_processes=gather_across_processes,
        process_group=process_group,
    ).loss()
