"""Optimizer state size and step time of every optimizer of `create_optimizer`, on real image towers.

For the default image tower (cnn-small) and vit-small, each with its projection into the 128-d embedding
space, the benchmark gives every optimizer the same gradients, runs warm-up steps, then times
`optimizer.step()` in interleaved rounds (median per optimizer) on one thread. It prints one JSON line per
(tower, optimizer): the state bytes per trainable parameter and the step time relative to
torch.optim.AdamW measured in the same run (above 1: slower than AdamW).

    python benchmarks/optimizer_state_bytes.py
"""

from __future__ import annotations

import copy
import json
import statistics
import time

import torch
from torch import nn

from transferlab.models.registry import create_image_tower
from transferlab.optim import OPTIMIZERS, create_optimizer, parameter_groups

WARMUP, ROUNDS = 3, 15


def tower_with_projection(name: str) -> nn.Module:
    tower = create_image_tower(name, in_channels=1, image_size=28)
    return nn.Sequential(tower, nn.Linear(tower.width, 128, bias=False))


def state_bytes(optimizer: torch.optim.Optimizer) -> int:
    return sum(value.numel() * value.element_size() for state in optimizer.state.values()
               for value in state.values() if isinstance(value, torch.Tensor))


def main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    for name in ("cnn-small", "vit-small"):
        model = tower_with_projection(name)
        model(torch.randn(32, 1, 28, 28)).square().mean().backward()
        grads = [p.grad.clone() for p in model.parameters()]
        runs = {}
        for optimizer_name in OPTIMIZERS:
            copy_ = copy.deepcopy(model)
            for param, grad in zip(copy_.parameters(), grads, strict=True):
                param.grad = grad.clone()
            runs[optimizer_name] = create_optimizer(optimizer_name, parameter_groups(copy_, 0.05), lr=1e-4,
                                                    betas=(0.9, 0.98), eps=1e-6)
        times = {optimizer_name: [] for optimizer_name in runs}
        for round_ in range(WARMUP + ROUNDS):
            for optimizer_name, optimizer in runs.items():
                start = time.perf_counter()
                optimizer.step()
                if round_ >= WARMUP:
                    times[optimizer_name].append(time.perf_counter() - start)
        params = sum(p.numel() for p in model.parameters())
        adamw = statistics.median(times["adamw"])
        for optimizer_name, optimizer in runs.items():
            print(json.dumps({"benchmark": "optimizer_state_bytes", "tower": name, "params": params,
                              "optimizer": optimizer_name,
                              "state_bytes_per_param": round(state_bytes(optimizer) / params, 3),
                              "step_time_vs_adamw": round(statistics.median(times[optimizer_name]) / adamw, 2)}))


if __name__ == "__main__":
    main()
