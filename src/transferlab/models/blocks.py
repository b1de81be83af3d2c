"""Running a tower's transformer blocks, optionally with activation checkpointing.

With checkpointing on, each block's activations are dropped after the forward pass and recomputed in the
backward pass (Chen et al., 2016, "Training Deep Nets with Sublinear Memory Cost"): memory falls from one
set of activations per block to one per tower, for about one more forward pass of compute. The RNG state
is replayed on recomputation, so dropout draws the same masks.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


def run_blocks(blocks: nn.TransformerEncoder, hidden: torch.Tensor, checkpointing: bool = False,
               **kwargs) -> torch.Tensor:
    """`blocks(hidden, **kwargs)` layer by layer, each layer checkpointed when asked and training."""
    recompute = checkpointing and torch.is_grad_enabled()
    for layer in blocks.layers:
        hidden = checkpoint(layer, hidden, use_reentrant=False, **kwargs) if recompute else layer(hidden, **kwargs)
    return hidden
