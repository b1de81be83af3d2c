"""Gathering the ranks' rows of a tensor, with and without autograd: what the distributed losses and the
training objectives use to see the global batch.

W ranks each hold B rows (the same B on every rank: pad or drop the last batch), N = W·B rows in all; rank
r holds the rows r·B … (r+1)·B − 1 of the global batch. `all_gather_with_grad` concatenates the ranks'
tensors in rank order, and its backward hands each rank the gradient of its own rows summed over the losses
of all ranks:

    forward:  X = [x_0; x_1; …; x_{W−1}]                       [N, d] on every rank
    backward: ∂/∂x_r = Σ_q (∂L_q/∂X)[rows of r]                 (all-reduce sum, then slice)

So when each rank q computes a loss L_q from X and DistributedDataParallel averages the gradients, every
parameter gradient is that of (1/W) Σ_q L_q (the all-reduce sum here and DDP's division by W cancel);
losses/distributed.py spells out what this means for the CLIP and SigLIP losses.

Each function takes an optional process group; outside torch.distributed (not initialised), or in a group of
one rank, the gathers are the identity. Every rank must call them, and backpropagate through
`all_gather_with_grad`, the same number of times in the same order: both are collectives.

Example (one process, so the gather returns its input):

    >>> import torch
    >>> from transferlab.distributed.gather import all_gather_no_grad, all_gather_with_grad, rank_and_size
    >>> x = torch.arange(6.0).reshape(3, 2)
    >>> all_gather_with_grad(x) is x, all_gather_no_grad(x) is x
    (True, True)
    >>> rank_and_size()
    (0, 1)
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def _distributed(group: dist.ProcessGroup | None) -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size(group) > 1


def rank_and_size(group: dist.ProcessGroup | None = None) -> tuple[int, int]:
    """This process's rank in `group` (the default group when None) and the group's size; (0, 1) outside
    torch.distributed."""
    if not _distributed(group):
        return 0, 1
    return dist.get_rank(group), dist.get_world_size(group)


class _AllGatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, group: dist.ProcessGroup | None) -> torch.Tensor:
        ctx.group = group
        ctx.rank, world_size = rank_and_size(group)
        ctx.rows = x.shape[0]
        parts = [torch.empty_like(x) for _ in range(world_size)]
        dist.all_gather(parts, x.contiguous(), group=group)
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        # Each rank's grad is ∂L_q/∂X of its own loss; their sum is ∂(Σ_q L_q)/∂X, of which we keep our rows.
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=ctx.group)
        return grad[ctx.rank * ctx.rows:(ctx.rank + 1) * ctx.rows], None


def all_gather_with_grad(x: torch.Tensor, group: dist.ProcessGroup | None = None) -> torch.Tensor:
    """Every rank's `x` [B, ...] concatenated in rank order along dim 0 ([W·B, ...]); B must be equal on all
    ranks. The backward returns to each rank the gradient of its own rows summed over all ranks' losses.
    The identity when torch.distributed is not initialised or the group has one rank."""
    if not _distributed(group):
        return x
    return _AllGatherWithGrad.apply(x, group)


def all_gather_no_grad(x: torch.Tensor, group: dist.ProcessGroup | None = None) -> torch.Tensor:
    """Every rank's `x` [B, ...] concatenated in rank order along dim 0, outside autograd (for ids, labels)."""
    if not _distributed(group):
        return x
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size(group))]
    dist.all_gather(parts, x.contiguous(), group=group)
    return torch.cat(parts, dim=0)
