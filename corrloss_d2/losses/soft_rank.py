"""Differentiable soft ranks by Euclidean projection onto the permutahedron.

Blondel, Teboul, Berthet, Djolonga, "Fast Differentiable Sorting and Ranking", ICML 2020: the l2
soft rank of ``x`` with strength ``eps`` is the projection of ``x / eps`` onto the permutahedron of
``(1, ..., n)``. Sorting ``z = x / eps`` in non-increasing order reduces the projection to an
isotonic regression of ``z_sorted - (n, ..., 1)``, solved exactly by pool-adjacent-violators (PAV).

The forward pass runs on the CPU (numpy's sort, then one compiled kernel: group, PAV); it records
which PAV block each value fell in, and the backward pass applies the projection's exact Jacobian
(identity minus averaging within blocks) with a second kernel.
"""
import numba
import numpy as np
import torch

__all__ = ["soft_rank", "grouped_soft_rank", "SOFT_RANK_BACKENDS"]

SOFT_RANK_BACKENDS = ("native", "torchsort")
NON_FINITE_MESSAGE = ("soft_rank got non-finite values (inf or NaN, or overflow of x / strength); "
                      "ranks are undefined for them")


@numba.njit(cache=True, nogil=True)
def _soft_rank_kernel(z, descending, group_index, num_groups, centered, ranks, block):
    """Projects each group of ``z`` onto its permutahedron; fills ``ranks`` and ``block``.

    Args:
        z: (N,) float64 values (already divided by the strength).
        descending: (N,) int64 permutation sorting ``z`` in non-increasing order.
        group_index: (N,) int64 group of each value, in ``[0, num_groups)``.
        centered: subtract each group's mean rank ``(m + 1) / 2`` (exact: the projection keeps
            the sum of ranks).
        ranks: (N,) float64 output, soft ranks in the input order.
        block: (N,) int64 output, id of the PAV block holding each value (consecutive over all
            groups); the projection's Jacobian is identity minus averaging within blocks.
    Returns:
        the number of blocks.
    """
    n = z.shape[0]
    offsets = np.zeros(num_groups + 1, np.int64)
    for i in range(n):
        offsets[group_index[i] + 1] += 1
    for g in range(num_groups):
        offsets[g + 1] += offsets[g]
    # Stable counting sort of the descending order by group: each group's members end up
    # contiguous and still in non-increasing order of value.
    fill = offsets[:-1].copy()
    members = np.empty(n, np.int64)
    for k in range(n):
        i = descending[k]
        members[fill[group_index[i]]] = i
        fill[group_index[i]] += 1
    start = np.empty(n, np.int64)
    total = np.empty(n, np.float64)
    count = np.empty(n, np.float64)
    num_blocks = 0
    for g in range(num_groups):
        first = offsets[g]
        size = offsets[g + 1] - first
        shift = (size + 1) / 2.0 if centered else 0.0
        # Isotonic (non-increasing) regression of the sorted values minus (size, ..., 1) by PAV.
        top = -1
        for k in range(size):
            top += 1
            start[top] = k
            total[top] = z[members[first + k]] - (size - k)
            count[top] = 1.0
            # Merge while the previous block's mean is below this one's (means compared by
            # cross-multiplication).
            while top > 0 and total[top - 1] * count[top] < total[top] * count[top - 1]:
                total[top - 1] += total[top]
                count[top - 1] += count[top]
                top -= 1
        for b in range(top + 1):
            end = start[b + 1] if b < top else size
            offset = total[b] / count[b] + shift
            for k in range(start[b], end):
                i = members[first + k]
                ranks[i] = z[i] - offset
                block[i] = num_blocks
            num_blocks += 1
    return num_blocks


@numba.njit(cache=True, nogil=True)
def _within_block_deviation(grad, block, num_blocks, out):
    """``out = grad - mean of grad over its block``: the Jacobian of the projection applied to
    ``grad`` (symmetric, so the same for the vector-Jacobian product)."""
    total = np.zeros(num_blocks, np.float64)
    count = np.zeros(num_blocks, np.float64)
    for i in range(grad.shape[0]):
        total[block[i]] += grad[i]
        count[block[i]] += 1.0
    for i in range(grad.shape[0]):
        out[i] = grad[i] - total[block[i]] / count[block[i]]


class _PermutahedronProjection(torch.autograd.Function):
    """Soft ranks of ``x / strength`` within groups; exact Jacobian in backward. Both passes run
    on the CPU (one compiled kernel each); results go back to the input's device."""

    @staticmethod
    def forward(ctx, x, group_index, num_groups, strength, centered):
        z = x.detach().to("cpu", torch.float64).numpy() / strength
        if not np.isfinite(z).all():
            raise ValueError(NON_FINITE_MESSAGE)
        ranks = np.empty_like(z)
        block = np.empty(z.shape[0], np.int64)
        ctx.num_blocks = _soft_rank_kernel(z, np.argsort(-z), group_index, num_groups, centered,
                                           ranks, block)
        ctx.block, ctx.strength = block, strength
        return torch.from_numpy(ranks).to(x.device, x.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        grad_np = grad.detach().to("cpu", torch.float64).numpy()
        out = np.empty_like(grad_np)
        _within_block_deviation(grad_np, ctx.block, ctx.num_blocks, out)
        grad_x = torch.from_numpy(out / ctx.strength).to(grad.device, grad.dtype)
        return grad_x, None, None, None, None


def _check_inputs(x: torch.Tensor, strength: float) -> None:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"soft_rank expects a floating-point tensor, got {type(x).__name__} "
                        f"{getattr(x, 'dtype', '')}")
    if not (isinstance(strength, (int, float)) and np.isfinite(strength) and strength > 0):
        raise ValueError(f"soft_rank strength must be a positive finite number, got {strength!r}")


def soft_rank(x: torch.Tensor, strength: float = 1.0, *, backend: str = "native") -> torch.Tensor:
    """Differentiable ranks along the last dimension, ascending (the smallest value gets rank 1).

    The l2 soft rank is the projection of ``x / strength`` onto the permutahedron of ``(1..n)``.
    As ``strength -> 0`` it tends to the exact ranks (ties share their block's mean rank); exact
    ranks are reached once every gap between sorted values exceeds ``strength``. Large strengths
    pool everything into one block: then the ranks are the affine map
    ``x / strength - mean(x) / strength + (n + 1) / 2``.

    Note:
        ``strength=1.0`` is torchsort's and the Correlation Loss code's default. For inputs in
        [0, 1] (probabilities, IoUs) it pools everything into one block for every n >= 2, so a
        "Spearman" correlation computed on such ranks equals Pearson's in value and gradient. A
        true rank correlation needs a strength well below ``2 * range(x) / n``.

    Args:
        x: (..., n) floating-point tensor, finite, on any device.
        strength: regularisation strength ``eps > 0``.
        backend: "native" (this module, exact PAV) or "torchsort" (requires torchsort installed).
    Returns:
        (..., n) soft ranks with the dtype and device of ``x``; differentiable w.r.t. ``x``.
    """
    _check_inputs(x, strength)
    if backend not in SOFT_RANK_BACKENDS:
        raise ValueError(f"soft_rank backend must be one of {SOFT_RANK_BACKENDS}, got {backend!r}")
    if x.dim() == 0:
        raise ValueError("soft_rank needs at least one dimension to rank along, got a scalar")
    n = x.shape[-1]
    if x.numel() == 0:
        return x * 0
    rows = x.reshape(-1, n)
    if backend == "torchsort":
        try:
            import torchsort
        except ImportError as e:
            raise ImportError("soft_rank(backend='torchsort') needs the optional package torchsort "
                              "(pip install torchsort); backend='native' needs nothing") from e
        if not bool(torch.isfinite(rows).all()):
            raise ValueError(NON_FINITE_MESSAGE)
        ranks = torchsort.soft_rank(rows, regularization="l2", regularization_strength=strength)
        return ranks.reshape(x.shape)

    num_rows = rows.shape[0]
    row_index = np.repeat(np.arange(num_rows, dtype=np.int64), n)
    ranks = _PermutahedronProjection.apply(rows.reshape(-1), row_index, num_rows, strength, False)
    return ranks.reshape(x.shape)


def grouped_soft_rank(x: torch.Tensor, group_index: torch.Tensor, num_groups: int,
                      strength: float = 1.0, *, centered: bool = False) -> torch.Tensor:
    """Soft ranks of ``x`` computed separately within each group (see :func:`soft_rank`).

    Args:
        x: (N,) floating-point values.
        group_index: (N,) int64 group of each value, in ``[0, num_groups)``.
        num_groups: number of groups G.
        strength: regularisation strength ``eps > 0``.
        centered: subtract each group's mean rank ``(m_g + 1) / 2`` in float64 before casting to
            the dtype of ``x``; keeps float32 precision for groups of thousands of values.
    Returns:
        (N,) ranks in ``1..m_g`` within each group g of size ``m_g`` (or centred); differentiable
        w.r.t. ``x``.
    """
    _check_inputs(x, strength)
    if x.numel() == 0:
        return x * 0
    group_np = group_index.to("cpu", torch.int64).numpy()
    return _PermutahedronProjection.apply(x, group_np, num_groups, strength, centered)
