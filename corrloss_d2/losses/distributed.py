"""Gathering per-process samples so that a correlation is computed over the global batch."""

from typing import List, Optional

import torch
import torch.distributed as dist

__all__ = ["gather_samples", "distributed_world_size", "mean_over_processes"]


def distributed_world_size() -> int:
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def mean_over_processes(value: float, device: torch.device) -> float:
    """The mean of a per-process number (a count of positives or of ground-truth boxes) over all
    processes, so that a loss normaliser agrees across processes; ``value`` itself without an
    initialised process group of more than one process.

    Args:
        device: where the collective runs (a CUDA device for NCCL, the CPU for GLOO).
    """
    world_size = distributed_world_size()
    if world_size == 1:
        return float(value)
    total = torch.tensor(float(value), dtype=torch.float64, device=device)
    dist.all_reduce(total)
    return total.item() / world_size


class _AllGatherSumGrad(torch.autograd.Function):
    """all_gather within a process group whose backward sums the gradients of its processes.

    Every process of the group evaluates the same function of the gathered samples. Summing the
    group's gradients w.r.t. the gathered tensor and keeping the local slice gives
    ``G * dL/dx_local`` (G processes in the group); DDP's gradient averaging over all W processes
    then yields the gradient of the mean over the W / G groups of their losses, exactly.
    """

    @staticmethod
    def forward(ctx, padded: torch.Tensor, group) -> torch.Tensor:
        ctx.group = group
        gathered = [torch.empty_like(padded) for _ in range(dist.get_world_size(group))]
        dist.all_gather(gathered, padded.contiguous(), group=group)
        return torch.stack(gathered)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous()
        dist.all_reduce(grad, group=ctx.group)
        return grad[dist.get_rank(ctx.group)], None


def gather_samples(
    differentiable: torch.Tensor, *constants: torch.Tensor, group: Optional[object] = None
) -> List[torch.Tensor]:
    """Concatenates 1-D per-sample tensors of the processes of ``group`` (all processes when
    None) in rank order; sizes may differ.

    Args:
        differentiable: (N_r,) tensor whose gradient must reach this process's samples.
        constants: further (N_r,) tensors gathered without gradient (IoUs, group ids).
        group: a ``torch.distributed`` process group this process belongs to, or None.
    Returns:
        ``[differentiable_all, *constants_all]``, each (sum_r N_r,). Without an initialised
        process group, or in a group of one process, the inputs unchanged.
    """
    if distributed_world_size() == 1 or dist.get_world_size(group) == 1:
        return [differentiable, *constants]
    local_size = torch.tensor([differentiable.shape[0]], device=differentiable.device)
    sizes = [torch.zeros_like(local_size) for _ in range(dist.get_world_size(group))]
    dist.all_gather(sizes, local_size, group=group)
    sizes = [int(s) for s in sizes]
    padded_len = max(sizes)

    def pad(t: torch.Tensor) -> torch.Tensor:
        return torch.cat([t, t.new_zeros(padded_len - t.shape[0])])

    def unpad(stacked: torch.Tensor) -> torch.Tensor:
        return torch.cat([stacked[r, :n] for r, n in enumerate(sizes)])

    outputs = [unpad(_AllGatherSumGrad.apply(pad(differentiable), group))]
    for t in constants:
        gathered = [torch.empty(padded_len, dtype=t.dtype, device=t.device) for _ in sizes]
        dist.all_gather(gathered, pad(t.detach()).contiguous(), group=group)
        outputs.append(unpad(torch.stack(gathered)))
    return outputs
