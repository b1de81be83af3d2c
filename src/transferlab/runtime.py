"""Devices, copies to them, and randomness.

`to_device` is how host tensors reach a GPU in training without making the host wait (pinned memory,
non-blocking copies); `tf32_matmuls` lets float32 matrix products and convolutions use TF32 on CUDA.

Every random draw of training comes from a generator derived from (seed, purpose, counter) — the epoch
for the data order, the step for augmentation and caption choice — so any step can be replayed exactly
without carrying generator state across a restart.
"""

from __future__ import annotations

import contextlib
import hashlib
import random
from collections.abc import Iterator

import numpy as np
import torch

from transferlab.errors import UserError


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' picks CUDA, then Apple MPS, then the CPU; an explicit device must exist."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"'{name}' is not a device. Use auto, cpu, cuda, cuda:<index> or mps.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"Device '{name}' was asked for but this machine has no CUDA GPU usable by torch. "
                        f"Use --device auto or --device cpu.")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"Device '{name}' was asked for but MPS is not available. Use --device auto or cpu.")
    return device


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """`tensor` on `device` without the host waiting for the copy. To CUDA from the CPU it goes through pinned
    memory with a non-blocking copy, queued on the current stream (torch's caching host allocator keeps the
    pinned buffer until the copy has run): a plain `.to("cuda")` from pageable memory makes the host wait for
    everything queued before it, so the GPU idles while the next step is prepared. Elsewhere `.to(device)`."""
    if device.type != "cuda" or tensor.device.type != "cpu":
        return tensor.to(device)
    return (tensor if tensor.is_pinned() else tensor.pin_memory()).to(device, non_blocking=True)


@contextlib.contextmanager
def tf32_matmuls(enabled: bool) -> Iterator[None]:
    """Inside the block, float32 matrix products and convolutions on CUDA may use TF32 (inputs rounded to a
    10-bit mantissa, float32 accumulation: several times faster on Ampere and later GPUs, ~1e-3 relative
    error per product) or may not; the previous setting is restored after. The CPU is not affected."""
    cudnn = torch.backends.cudnn
    if hasattr(cudnn, "conv"):  # torch >= 2.9: per-backend settings (mixing them with allow_tf32 is an error)
        settings = [torch.backends.cuda.matmul, cudnn.conv]
        name, value = "fp32_precision", "tf32" if enabled else "ieee"
    else:
        settings, name, value = [torch.backends.cuda.matmul, cudnn], "allow_tf32", enabled
    before = [getattr(setting, name) for setting in settings]
    for setting in settings:
        setattr(setting, name, value)
    try:
        yield
    finally:
        for setting, previous in zip(settings, before, strict=True):
            setattr(setting, name, previous)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def derived_generator(seed: int, purpose: str, counter: int) -> torch.Generator:
    """A CPU generator whose stream depends only on (seed, purpose, counter)."""
    return torch.Generator().manual_seed(derived_seed(seed, purpose, counter))


def derived_random(seed: int, purpose: str, *counters: int) -> random.Random:
    """A Python generator whose stream depends only on (seed, purpose, counters): for per-sample draws in loader
    workers, where a torch generator per sample would cost more than the draw."""
    return random.Random(derived_seed(seed, purpose, *counters))


def derived_seed(seed: int, purpose: str, *counters: int) -> int:
    """A 63-bit integer that depends only on (seed, purpose, counters): what the derived generators start from."""
    text = ":".join(str(part) for part in (seed, purpose, *counters))
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little") & (2**63 - 1)
