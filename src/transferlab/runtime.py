"""Devices and randomness.

Every random draw of training comes from a generator derived from (seed, purpose, counter) — the epoch
for the data order, the step for augmentation and caption choice — so any step can be replayed exactly
without carrying generator state across a restart.
"""

from __future__ import annotations

import hashlib
import random

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
