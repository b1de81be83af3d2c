"""LAMB (You et al. 2020, "Large Batch Optimization for Deep Learning: Training BERT in 76 minutes").

Adam's bias-corrected moments give a direction, weight decay is added to it, and each parameter tensor's
step is rescaled so that its size is proportional to the tensor's norm (the trust ratio, φ = identity):

    m ← β1·m + (1 − β1)·g,   v ← β2·v + (1 − β2)·g²,   m̂ = m / (1 − β1ᵗ),   v̂ = v / (1 − β2ᵗ)
    r = m̂ / (√v̂ + ε) + λ·θ
    θ ← θ − η · (‖θ‖ / ‖r‖) · r        (ratio 1 when ‖θ‖ or ‖r‖ is 0)

Tensors of a group with weight_decay == 0 get ratio 1, i.e. a plain Adam step, unless `always_adapt`:
in transferlab's groups those are the biases, norm gains and the temperature, whose small or zero norms
would otherwise freeze them (the choice of NVIDIA's and timm's LAMB). Gradient clipping is left to the
trainer. States are kept in the parameter's dtype.
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
            for param in group["params"]:
                if param.grad is None:
                    continue
                grad, state = param.grad, self.state[param]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float32)
                    state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
                state["step"] += 1
                t = state["step"].item()
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                exp_avg.lerp_(grad, 1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                denom = (exp_avg_sq / (1 - beta2 ** t)).sqrt_().add_(eps)
                update = (exp_avg / (1 - beta1 ** t)).div_(denom)
                if weight_decay:
                    update.add_(param, alpha=weight_decay)
                if adapt:
                    param_norm, update_norm = param.norm(), update.norm()
                    ratio = torch.where((param_norm > 0) & (update_norm > 0), param_norm / update_norm, 1.0)
                    update.mul_(ratio)
                param.add_(update, alpha=-lr)
        return loss
