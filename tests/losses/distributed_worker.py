"""Run under torchrun (2 ranks, gloo, float64) by tests/losses/test_distributed.py; rank 0 writes JSON.

Each case: two tiny linear towers (the same seeded weights on every rank) wrapped in a real
DistributedDataParallel; each rank encodes its half of one global batch, takes the distributed loss and its
backward, and after DDP's gradient averaging rank 0 records every rank's loss value and the parameter
gradients. Also records `all_gather_with_grad` of per-rank tensors under a per-rank weighted sum.

Usage: python -m torch.distributed.run --standalone --nproc_per_node 2 distributed_worker.py OUT.json
"""

from __future__ import annotations

import json
import math
import sys

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from transferlab.distributed.gather import all_gather_no_grad, all_gather_with_grad
from transferlab.losses.distributed import distributed_clip_loss, distributed_siglip_loss

GLOBAL_BATCH = 8
IDS = [0, 1, 0, 2, 1, 3, 3, 0]  # equal ids on both halves, so multi-positive targets cross ranks
# name: (loss, local_loss, multi-positive ids, label smoothing)
CASES = {
    "clip": ("clip", False, False, 0.0),
    "clip_local": ("clip", True, False, 0.0),
    "clip_ids_smoothing": ("clip", False, True, 0.1),
    "clip_local_ids_smoothing": ("clip", True, True, 0.1),
    "siglip": ("siglip", False, False, 0.0),
    "siglip_local": ("siglip", True, False, 0.0),
    "siglip_ids": ("siglip", False, True, 0.0),
    "siglip_local_ids": ("siglip", True, True, 0.0),
}
GATHER_ROWS, GATHER_DIM = 2, 3


class Towers(nn.Module):
    """Linear image and text towers, a learnable log-scale and (for SigLIP) a bias; seeded, so identical
    on every rank and in the single-process reference."""

    def __init__(self, with_bias: bool) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.image = nn.Linear(6, 5, dtype=torch.float64)
        self.text = nn.Linear(4, 5, dtype=torch.float64)
        with torch.no_grad():
            for parameter in [*self.image.parameters(), *self.text.parameters()]:
                parameter.copy_(torch.randn(parameter.shape, generator=generator, dtype=torch.float64))
        self.log_scale = nn.Parameter(torch.tensor(math.log(4.0), dtype=torch.float64))
        self.bias = nn.Parameter(torch.tensor(-2.0, dtype=torch.float64)) if with_bias else None

    def forward(self, images: torch.Tensor, texts: torch.Tensor):
        return (F.normalize(self.image(images), dim=-1), F.normalize(self.text(texts), dim=-1),
                self.log_scale.exp(), self.bias)


def global_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(GLOBAL_BATCH, 6, generator=generator, dtype=torch.float64)
    texts = torch.randn(GLOBAL_BATCH, 4, generator=generator, dtype=torch.float64)
    return images, texts, torch.tensor(IDS)


def gather_input(rank: int) -> torch.Tensor:
    return torch.randn(GATHER_ROWS, GATHER_DIM, generator=torch.Generator().manual_seed(10 + rank),
                       dtype=torch.float64)


def gather_weights(rank: int, world_size: int) -> torch.Tensor:
    return torch.randn(world_size * GATHER_ROWS, GATHER_DIM, generator=torch.Generator().manual_seed(20 + rank),
                       dtype=torch.float64)


def run_case(name: str, rank: int, world_size: int) -> dict:
    kind, local_loss, use_ids, smoothing = CASES[name]
    model = DistributedDataParallel(Towers(with_bias=kind == "siglip"))
    images, texts, ids = global_batch()
    rows = slice(rank * GLOBAL_BATCH // world_size, (rank + 1) * GLOBAL_BATCH // world_size)
    image_emb, text_emb, scale, bias = model(images[rows], texts[rows])
    local_ids = ids[rows] if use_ids else None
    if kind == "clip":
        loss = distributed_clip_loss(image_emb, text_emb, scale, local_loss=local_loss, positive_ids=local_ids,
                                     label_smoothing=smoothing)
    else:
        loss = distributed_siglip_loss(image_emb, text_emb, scale, bias, local_loss=local_loss,
                                       positive_ids=local_ids)
    loss.backward()  # DDP all-reduces (averages) the parameter gradients here
    losses = all_gather_no_grad(loss.detach().reshape(1))
    return {"losses": losses.tolist(),
            "grads": {key: parameter.grad.tolist() for key, parameter in model.module.named_parameters()}}


def run_gather(rank: int, world_size: int) -> dict:
    x = gather_input(rank).requires_grad_(True)
    gathered = all_gather_with_grad(x)
    (gathered * gather_weights(rank, world_size)).sum().backward()
    return {"value": gathered.tolist(), "grads": all_gather_no_grad(x.grad).tolist()}


def main(out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, world_size = dist.get_rank(), dist.get_world_size()
    results = {"world_size": world_size, "gather": run_gather(rank, world_size),
               "cases": {name: run_case(name, rank, world_size) for name in CASES}}
    if rank == 0:
        with open(out, "w") as file:
            json.dump(results, file)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
