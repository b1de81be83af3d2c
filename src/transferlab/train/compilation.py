"""`train.compile`: the towers' forward and backward compiled by torch.compile (TorchInductor) for training.

Compiling fuses the towers' element-wise work (norms, activations, residual additions, attention's reshapes)
into generated kernels. On the 2-core CPU here it made an open_clip ViT's training step ~1.1x faster, after a
first step that spent over a minute compiling (text batches of a new length recompile once, then a
shape-generic version is reused): it pays off in long runs only, hence off by default. Where compiling is
impossible (no C++ compiler, an unsupported platform) the run says so and trains uncompiled. The towers are
compiled in place, so checkpoints keep their keys; `uncompile` returns them to eager mode, for evaluation.
"""

from __future__ import annotations

import sys

import torch
from torch import nn
from tqdm import tqdm


def compile_towers(towers: list[nn.Module]) -> bool:
    """Compile each tower in place when torch.compile works here; whether it does."""
    try:
        torch.compile(lambda x: x * 2 + 1)(torch.ones(2))  # fails fast where the backend cannot build kernels
    except Exception as err:  # any backend failure means the same: train uncompiled
        tqdm.write(f"train.compile: torch.compile is unavailable here ({type(err).__name__}: {str(err)[:200]}); "
                   f"training uncompiled.", file=sys.stderr)
        return False
    for tower in towers:
        tower.compile()
    return True


def uncompile(towers: list[nn.Module]) -> None:
    """Back to eager forward passes (evaluation's batch shapes would otherwise trigger new compilations)."""
    for tower in towers:
        tower._compiled_call_impl = None  # what nn.Module.compile() set
