"""FSDP (`train.fsdp`): towers too large for one device, sharded across the ranks with torch's `fully_shard`.

Each tower's blocks, then the tower itself, become FSDP units: their parameters (and so their gradients and
optimizer states) are DTensors of which each rank holds a 1/W slice; a unit's full weights exist only
while it runs forward or backward. FSDP reduce-scatters (and averages) the gradients of sharded parameters
itself, once per backward pass, so gradient caching and accumulation still add up exact gradients; the
projections, the temperature and the loss's parameters stay replicated and are averaged by
`average_gradients`. Checkpoints hold full tensors (every rank joins the gather, rank 0 writes), so a
checkpoint written with FSDP resumes without it, and the other way round.
"""

from __future__ import annotations

import sys

import torch
import torch.distributed as dist
from torch import nn


def shard_towers(towers: list[nn.Module]) -> None:
    """fully_shard every block of each tower (`lockable_blocks()`), then the tower."""
    from torch.distributed.fsdp import fully_shard

    for tower in towers:
        for block in tower.lockable_blocks()[0] if hasattr(tower, "lockable_blocks") else []:
            fully_shard(block)
        fully_shard(tower)


def sharded(tensor: torch.Tensor | None) -> bool:
    """Whether `tensor` is an FSDP shard (a DTensor). torch's DTensor module takes seconds to import and only
    sharding loads it, so a process that never imported it holds no shard."""
    module = sys.modules.get("torch.distributed.tensor")
    return module is not None and isinstance(tensor, module.DTensor)


def full_tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`state` with every sharded tensor gathered whole; a collective when any is sharded (all ranks call)."""
    return {key: value.full_tensor() if sharded(value) else value for key, value in state.items()}


def shard_like(full: dict[str, torch.Tensor], current: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Full tensors (a checkpoint) cut into this rank's shards wherever `current` is sharded."""
    from torch.distributed.tensor import distribute_tensor

    return {key: distribute_tensor(value.to(current[key].device, current[key].dtype), current[key].device_mesh,
                                   current[key].placements) if sharded(current.get(key)) else value
            for key, value in full.items()}


def shard_optimizer_state(optimizer: torch.optim.Optimizer, state: dict[int, dict[str, torch.Tensor]]) -> None:
    """Full optimizer state tensors (by parameter index) sharded like their parameters, in place."""
    from torch.distributed.tensor import distribute_tensor

    parameters = [p for group in optimizer.param_groups for p in group["params"]]
    for index, slots in state.items():
        parameter = parameters[index]
        if sharded(parameter):
            for name, value in slots.items():
                if value.shape == parameter.shape:
                    slots[name] = distribute_tensor(value.to(parameter.to_local().device), parameter.device_mesh,
                                                    parameter.placements)


def gradient_norm(grads: list[torch.Tensor]) -> torch.Tensor:
    """The L2 norm of all gradients, sharded ones included (an all-reduce of their squared local norms)."""
    plain = [g for g in grads if not sharded(g)]
    if len(plain) == len(grads):
        return torch.nn.utils.get_total_norm(grads)
    local = torch.stack([g.to_local().double().pow(2).sum() for g in grads if sharded(g)]).sum()
    dist.all_reduce(local)
    total = local + sum((g.double().pow(2).sum() for g in plain), torch.zeros((), dtype=torch.float64))
    return total.sqrt().float()


def clip_gradients(parameters: list[nn.Parameter], max_norm: float, norm: torch.Tensor) -> None:
    """Scale the gradients so that their norm `norm` is at most `max_norm` (as torch's clip_grad_norm_)."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not any(sharded(g) for g in grads):
        torch.nn.utils.clip_grads_with_norm_(parameters, max_norm, norm)
        return
    scale = torch.clamp(max_norm / (norm + 1e-6), max=1.0)
    for grad in grads:
        grad.mul_(scale.item())
