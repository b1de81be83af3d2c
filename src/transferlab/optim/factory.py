"""Build the optimizer of a recipe: AdamW with weight decay only on matrices and kernels.

Norm gains, biases and the temperature (every parameter with fewer than two dimensions) get no weight
decay, as in CLIP and open_clip: decaying a norm's gain or the logit scale towards zero only hurts.
"""

from __future__ import annotations

import torch
from torch import nn

from transferlab.config import TrainSpec


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for parameter in model.parameters():
        if parameter.requires_grad:
            (decay if parameter.ndim >= 2 else no_decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, spec: TrainSpec) -> torch.optim.Optimizer:
    groups = parameter_groups(model, spec.weight_decay)
    return torch.optim.AdamW(groups, lr=spec.lr, betas=spec.betas, eps=spec.eps)
