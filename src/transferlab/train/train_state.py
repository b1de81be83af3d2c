"""What a training checkpoint holds beyond the weights: the optimizer's state and every random generator's.

Both as flat tensors plus JSON-able metadata, so a checkpoint (checkpoints.py) stays safetensors + JSON.
"""

from __future__ import annotations

import random

import numpy as np
import torch

from transferlab.distributed import shard_optimizer_state


def optimizer_state(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """Optimizer state as flat tensors plus JSON-able parameter groups."""
    state = optimizer.state_dict()
    tensors = {f"optimizer.{index}.{name}": value for index, slots in state["state"].items()
               for name, value in slots.items()}
    return tensors, state["param_groups"]


def restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], groups: list[dict]) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    shard_optimizer_state(optimizer, state)  # FSDP: each rank keeps its shard of the full saved tensors
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def rng_state() -> tuple[dict[str, torch.Tensor], dict]:
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors.update({f"rng.cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    tensors["rng.numpy"] = torch.from_numpy(keys.astype(np.int64))
    version, values, gauss_next = random.getstate()
    return tensors, {"numpy": [kind, pos, has_gauss, gauss], "python": [version, list(values), gauss_next]}


def restore_rng(tensors: dict[str, torch.Tensor], saved: dict) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng.cuda."))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    kind, pos, has_gauss, gauss = saved["numpy"]
    np.random.set_state((kind, tensors["rng.numpy"].numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, values, gauss_next = saved["python"]
    random.setstate((version, tuple(values), gauss_next))
