"""What a training step does differently to keep a GPU busy; the same code runs on the CPU, where it changes nothing.

- `step_if`: the optimizer step of a step that may be skipped (a NaN loss, train/guards.py) without the host
  reading the verdict: torch's fused Adam/AdamW take it as their `found_inf` tensor (as under a gradient
  scaler) and skip the update on the device. Other optimizers read it, which makes the host wait once a step.
- `channels_last_towers`: on CUDA a convolutional image tower's weights go channels-last (NHWC), the layout
  cuDNN's tensor-core convolutions run on without transposing every activation; a ViT, whose only
  convolution is its patch embedding, is left as it is.

Host-to-device copies go through `runtime.to_device` (pinned memory, non-blocking), TF32 is `runtime.tf32_matmuls`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def step_if(optimizer: torch.optim.Optimizer, applied: torch.Tensor, read: Callable[[], bool]) -> None:
    """`optimizer.step()` if `applied` (a bool tensor on the device); `read()` is its value on the host, asked for
    only when the optimizer cannot skip on the device."""
    if skips_on_device(optimizer):
        optimizer.found_inf = (~applied).float()  # fused kernels return early when it is 1 (step counts too)
        try:
            optimizer.step()
        finally:
            del optimizer.found_inf
    elif read():
        optimizer.step()


def skips_on_device(optimizer: torch.optim.Optimizer) -> bool:
    """torch's Adam or AdamW with the fused kernel, which honours `found_inf` without reading it on the host."""
    return (type(optimizer) in (torch.optim.Adam, torch.optim.AdamW)
            and all(group.get("fused") for group in optimizer.param_groups))


def convolutional(tower: nn.Module) -> bool:
    """Most of the tower's weights are in 2-d convolutions with kernels larger than their stride (a CNN, not a
    ViT's patch embedding)."""
    total = sum(p.numel() for p in tower.parameters())
    in_convolutions = sum(p.numel() for m in tower.modules() if isinstance(m, nn.Conv2d)
                          and any(k > s for k, s in zip(m.kernel_size, m.stride, strict=True))
                          for p in m.parameters(recurse=False))
    return total > 0 and in_convolutions > total / 2


def channels_last_towers(towers: list[nn.Module], device: torch.device) -> list[nn.Module]:
    """Convert the convolutional ones of `towers` to channels-last when `device` is CUDA; those converted."""
    if device.type != "cuda":
        return []
    converted = [tower for tower in towers if convolutional(tower)]
    for tower in converted:
        tower.to(memory_format=torch.channels_last)
    return converted
