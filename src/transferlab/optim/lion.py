"""Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms", Algorithm 2).

With gradient g, momentum m, learning rate η and decoupled weight decay λ, one step is

    c ← β1·m + (1 − β1)·g
    θ ← θ − η·(sign(c) + λ·θ)          (λ applies to θ before this step's update)
    m ← β2·m + (1 − β2)·g

Every coordinate moves by exactly η (plus decay), so Lion wants a learning rate 3–10× smaller than AdamW's
and a weight decay 3–10× larger to keep the same effective decay η·λ. It stores one moment, in the
parameter's dtype. A step is five of torch's multi-tensor (`_foreach`) operations per parameter group, one
kernel launch each on a GPU for all its tensors, rather than five per tensor.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch.optim import Optimizer


class Lion(Optimizer):
    def __init__(self, params: Iterable, lr: float = 1e-4, betas: tuple[float, float] = (0.9, 0.99),
                 weight_decay: float = 0.0) -> None:
        if lr < 0 or weight_decay < 0 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"invalid Lion settings: lr={lr}, betas={betas}, weight_decay={weight_decay}")
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, weight_decay = group["lr"], group["weight_decay"]
            beta1, beta2 = group["betas"]
            params = [param for param in group["params"] if param.grad is not None]
            if not params:
                continue
            for param in params:
                if not self.state[param]:
                    self.state[param]["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
            grads, moments = [p.grad for p in params], [self.state[p]["exp_avg"] for p in params]
            updates = torch._foreach_lerp(grads, moments, beta1)  # β1·m + (1 − β1)·g
            torch._foreach_sign_(updates)
            torch._foreach_mul_(params, 1 - lr * weight_decay)
            torch._foreach_add_(params, updates, alpha=-lr)
            torch._foreach_lerp_(moments, grads, 1 - beta2)
        return loss
