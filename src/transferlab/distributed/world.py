"""Which process of a job this is, and the few collectives training and evaluation need.

transferlab never starts processes itself: `torchrun` (or SLURM's `srun`, one task per device) starts one
process per device and describes the job in environment variables, which `start` reads:

- torchrun: RANK, WORLD_SIZE, LOCAL_RANK (and MASTER_ADDR / MASTER_PORT for the rendezvous it set up);
- srun without torchrun: SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID, with MASTER_ADDR exported by the
  batch script (MASTER_PORT defaults to 29500).

Anything else is one process (world size 1), where every function here is a no-op or the identity. The
process group has gloo for CPU tensors and, where CUDA is available, NCCL for GPU tensors; process i of a
node uses GPU LOCAL_RANK.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist

from transferlab.distributed.sharding import sharded
from transferlab.errors import UserError
from transferlab.runtime import resolve_device

T = TypeVar("T")
BUCKET_BYTES = 25 * 2**20  # gradients are all-reduced in buckets of about this size, as DDP does


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the process that writes run directories, checkpoints, logs and reports."""
        return self.rank == 0


def launch_env(env: dict[str, str] | None = None) -> World:
    """The job as torchrun or SLURM describe it in the environment (world size 1 when neither does)."""
    env = os.environ if env is None else env
    names = (("RANK", "WORLD_SIZE", "LOCAL_RANK") if "WORLD_SIZE" in env else
             ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID") if int(env.get("SLURM_NTASKS", "1")) > 1 else None)
    if names is None:
        return World()
    try:
        rank, size, local = (int(env[name]) for name in names)
    except (KeyError, ValueError):
        raise UserError(f"The environment describes a distributed job but {', '.join(names)} are not all integers "
                        f"({', '.join(f'{n}={env.get(n)!r}' for n in names)}). Launch with torchrun, or srun "
                        f"with one task per device.") from None
    if not 0 <= rank < size:
        raise UserError(f"{names[0]}={rank} is not a rank of a job of {names[1]}={size} processes.")
    if names[0] == "SLURM_PROCID" and size > 1 and "MASTER_ADDR" not in env:
        raise UserError("Running under srun with several tasks, but MASTER_ADDR is not set. In the batch script: "
                        "export MASTER_ADDR=$(scontrol show hostnames $SLURM_JOB_NODELIST | head -n 1) "
                        "(see docs/distributed.md), or launch through torchrun.")
    return World(rank, size, local)


def start() -> World:
    """This process's place in the job; joins the job's process group (once) when there are several."""
    world = launch_env()
    if world.size > 1 and not dist.is_initialized():
        os.environ.setdefault("MASTER_PORT", "29500")
        nccl = torch.cuda.is_available() and dist.is_nccl_available()
        dist.init_process_group("cpu:gloo,cuda:nccl" if nccl else "gloo", init_method="env://", rank=world.rank,
                                world_size=world.size)
    return world


def local_device(name: str = "auto") -> torch.device:
    """The device named (see runtime.resolve_device); a CUDA device without an index becomes the GPU of this
    process's local rank, so the processes of a node use one GPU each."""
    device = resolve_device(name)
    if device.type == "cuda":
        if device.index is None:
            device = torch.device("cuda", current().local_rank)
        torch.cuda.set_device(device)
    return device


def current() -> World:
    """The job this process belongs to (world size 1 before `start` or outside torchrun)."""
    if not (dist.is_available() and dist.is_initialized()):
        return World()
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK",
                                                                            os.environ.get("SLURM_LOCALID", 0))))


def stop() -> None:
    """Leave the process group (at the end of a command)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if current().size > 1:
        dist.barrier()


def on_main(function: Callable[[], T]) -> T:
    """`function()` run by rank 0 only, its result (or its UserError) handed to every rank: for decisions
    every process must share, such as the name of a new run directory."""
    world = current()
    if world.size == 1:
        return function()
    box: list = [None]
    if world.main:
        try:
            box[0] = ("ok", function())
        except UserError as error:
            box[0] = ("error", str(error))
    dist.broadcast_object_list(box, src=0)
    status, value = box[0]
    if status == "error":
        raise UserError(value)
    return value


def sum_scalars(values: Iterable[torch.Tensor | float]) -> list[float]:
    """The sums over ranks of a few numbers, in one collective."""
    values = list(values)
    if current().size == 1:
        return [float(v) for v in values]
    packed = torch.tensor([float(v) for v in values], dtype=torch.float64)
    dist.all_reduce(packed)
    return packed.tolist()


def average_gradients(parameters: Iterable[torch.nn.Parameter]) -> None:
    """Replace each gradient by its mean over ranks, in flat buckets (DDP's all-reduce, run once after all
    of a step's backward passes, so gradient caching and accumulation stay exact). Every rank must hold
    gradients for the same parameters. FSDP-sharded gradients are left alone: FSDP has averaged them."""
    world = current()
    if world.size == 1:
        return
    grads = [p.grad for p in parameters if p.grad is not None and not sharded(p.grad)]
    bucket: list[torch.Tensor] = []
    for grad in grads:
        if bucket and (grad.dtype != bucket[0].dtype or
                       sum(g.numel() for g in bucket) * grad.element_size() >= BUCKET_BYTES):
            _reduce_bucket(bucket, world.size)
            bucket = []
        bucket.append(grad)
    if bucket:
        _reduce_bucket(bucket, world.size)


def _reduce_bucket(grads: list[torch.Tensor], size: int) -> None:
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= size
    offset = 0
    for grad in grads:
        grad.copy_(flat[offset:offset + grad.numel()].view_as(grad))
        offset += grad.numel()


def broadcast_module(module: torch.nn.Module) -> None:
    """Rank 0's parameters and buffers on every rank (after initialisation or a resume); FSDP shards, which
    differ by design, excepted."""
    if current().size == 1:
        return
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            if not sharded(tensor):
                dist.broadcast(tensor.data, src=0)


def gather_rows(local: torch.Tensor, counts: list[int]) -> list[torch.Tensor]:
    """Every rank's `local` [counts[rank], ...] (padded for the collective), in rank order."""
    world = current()
    if world.size == 1:
        return [local]
    padded = torch.zeros((max(counts), *local.shape[1:]), dtype=local.dtype, device=local.device)
    padded[:len(local)] = local
    parts = [torch.empty_like(padded) for _ in range(world.size)]
    dist.all_gather(parts, padded)
    return [part[:count] for part, count in zip(parts, counts, strict=True)]

