"""LAMB (You et al. 2020, "Large Batch Optimization for Deep Learning: Training BERT in 76 minutes").

Adam's bias-corrected moments give a direction, weight decay is added to it, and each parameter tensor's
step is rescaled so that its size is proportional to the tensor's norm (the trust ratio, φ = identity):

    m ← β1·m + (1 − β1)·g,   v ← β2·v + (1 − β2)·g²,   m̂ = m / (1 − β1ᵗ),   v̂ = v / (1 − β2ᵗ)
    r = m̂ / (√v̂ + ε) + λ·θ
    θ ← θ − η · (‖θ‖ / ‖r‖) · r        (ratio 1 when ‖θ‖ or ‖r‖ is 0)

Tensors of a group with weight_decay == 0 get ratio 1, i.e. a plain Adam step, unless `always_adapt`:
in transferlab's groups those are the biases, norm gains and the temperature, whose small or zero norms
would otherwise freeze them (the choice of NVIDIA's and timm's LAMB). Gradient clipping is left to the
trainer. States are kept in the parameter's dtype. A step runs as torch's multi-tensor (`_foreach`) operations
over a group's tensors (one kernel launch each on a GPU, not one per tensor); the step counts live on the CPU.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch.optim import Optimizer


class LAMB(Optimizer):
    def __init__(self, params: Iterable, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-6, weight_decay: float = 0.0, always_adapt: bool = False) -> None:
        if lr < 0 or eps < 0 or weight_decay < 0 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"invalid LAMB settings: lr={lr}, betas={betas}, eps={eps}, "
                             f"weight_decay={weight_decay}")
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay,
                                  "always_adapt": always_adapt})

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, eps, weight_decay = group["lr"], group["eps"], group["weight_decay"]
            beta1, beta2 = group["betas"]
            adapt = weight_decay != 0 or group["always_adapt"]
            params = [param for param in group["params"] if param.grad is not None]
            if not params:
                continue
            for param in params:
                state = self.state[param]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float32)
                    state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
                state["step"] += 1
            grads = [param.grad for param in params]
            exp_avgs, exp_avg_sqs = ([self.state[p][name] for p in params] for name in ("exp_avg", "exp_avg_sq"))
            steps = [self.state[p]["step"].item() for p in params]
            torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
            torch._foreach_mul_(exp_avg_sqs, beta2)
            torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1 - beta2)
            denoms = torch._foreach_div(exp_avg_sqs, [1 - beta2 ** t for t in steps])
            torch._foreach_sqrt_(denoms)
            torch._foreach_add_(denoms, eps)
            updates = torch._foreach_div(exp_avgs, [1 - beta1 ** t for t in steps])
            torch._foreach_div_(updates, denoms)
            if weight_decay:
                torch._foreach_add_(updates, params, alpha=weight_decay)
            if adapt:
                ratios = [torch.where((p > 0) & (u > 0), p / u, 1.0)
                          for p, u in zip(torch._foreach_norm(params), torch._foreach_norm(updates), strict=True)]
                torch._foreach_mul_(updates, ratios)
            torch._foreach_add_(params, updates, alpha=-lr)
        return loss
