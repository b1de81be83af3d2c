"""Batch normalisation over the global batch, on any device (torch's SyncBatchNorm runs on GPUs only).

Under torchrun each rank sees B/W samples. A plain BatchNorm would normalise by its own shard's statistics,
so a W-process step would differ from the single-process step on the whole batch, and the ranks' running
statistics would drift apart. `GlobalBatchNorm` sums each channel's count and sum over ranks, then the
centred sum of squares, with a differentiable all-reduce, so the forward pass, the gradients and the
running statistics are those of a BatchNorm on the concatenated batch:

    mean_c = Σ_ranks Σ x_c / N        var_c = Σ_ranks Σ (x_c − mean_c)² / N        (N samples·positions)

Outside training or with one process it is the plain BatchNorm it replaced (same state-dict keys).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from transferlab.distributed.world import current


class _SumOverRanks(torch.autograd.Function):
    """y = Σ_ranks x on every rank; the gradient of x is Σ_ranks ∂L_rank/∂y (each rank's loss uses y)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


def all_reduce(x: torch.Tensor) -> torch.Tensor:
    return _SumOverRanks.apply(x)


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected an input with a channel dimension, got shape {tuple(input.shape)}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and current().size > 1):
            return super().forward(x)
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        channels = x.shape[1]
        totals = all_reduce(torch.cat([x.sum(dims), x.new_full((1,), x.numel() / channels)]))
        count = totals[-1]
        mean = totals[:channels] / count
        centred = x - mean.view(shape)
        var = all_reduce((centred * centred).sum(dims)) / count
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            self._update_running_stats(mean.detach(), var.detach(), count.item())
        return y

    @torch.no_grad()
    def _update_running_stats(self, mean: torch.Tensor, var: torch.Tensor, count: float) -> None:
        self.num_batches_tracked += 1
        momentum = 1.0 / self.num_batches_tracked.item() if self.momentum is None else self.momentum
        self.running_mean.lerp_(mean.to(self.running_mean.dtype), momentum)
        unbiased = var * count / max(count - 1, 1)
        self.running_var.lerp_(unbiased.to(self.running_var.dtype), momentum)


def global_batch_norm(module: nn.Module) -> nn.Module:
    """`module` with every BatchNorm replaced in place by a GlobalBatchNorm holding the same state."""
    for name, child in module.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm) and not isinstance(child, GlobalBatchNorm):
            like = next((t for t in (child.weight, child.running_mean) if t is not None), None)
            place = {} if like is None else {"device": like.device, "dtype": like.dtype}
            replacement = GlobalBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                          child.track_running_stats, **place)
            replacement.load_state_dict(child.state_dict())
            replacement.train(child.training)
            replacement.requires_grad_(any(p.requires_grad for p in child.parameters()))
            setattr(module, name, replacement)
        else:
            global_batch_norm(child)
    return module
