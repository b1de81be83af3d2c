"""A small Vision Transformer image tower (Dosovitskiy et al. 2021) for low-resolution images.

Non-overlapping patches embedded by a strided conv, a learnable class token and position embeddings,
pre-norm transformer blocks and a final LayerNorm; the image's feature is the class token. Registered as
`vit-tiny` (width 96, depth 4, about 0.3M parameters) and `vit-small` (width 192, depth 6). The default
4-pixel patches give 49 tokens for 28x28 digits and 64 for 32x32 thumbnails.
"""

from __future__ import annotations

import torch
from torch import nn

from transferlab.models.blocks import run_blocks
from transferlab.models.registry import IMAGE_TOWERS


class ViT(nn.Module):
    external_weights = False

    def __init__(self, in_channels: int, image_size: int, patch_size: int = 4, width: int = 96,
                 depth: int = 4, heads: int = 3, mlp_ratio: float = 2.0, dropout: float = 0.0) -> None:
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image_size ({image_size}) must be divisible by patch_size ({patch_size}); "
                             f"choose a patch_size that divides it or resize the images")
        if width % heads:
            raise ValueError(f"width ({width}) must be divisible by heads ({heads})")
        self.width = width
        self.patch_embedding = nn.Conv2d(in_channels, width, kernel_size=patch_size, stride=patch_size)
        self.class_token = nn.Parameter(torch.empty(1, 1, width))
        self.position_embedding = nn.Parameter(torch.empty(1, 1 + (image_size // patch_size) ** 2, width))
        block = nn.TransformerEncoderLayer(width, heads, dim_feedforward=int(width * mlp_ratio),
                                           dropout=dropout, activation="gelu", batch_first=True,
                                           norm_first=True)
        self.blocks = nn.TransformerEncoder(block, depth, enable_nested_tensor=False)
        self.final_norm = nn.LayerNorm(width)
        self.grad_checkpointing = False
        nn.init.trunc_normal_(self.position_embedding, std=0.02)
        nn.init.trunc_normal_(self.class_token, std=0.02)

    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        self.grad_checkpointing = enabled

    def lockable_blocks(self) -> tuple[list[nn.Module], list[nn.Module]]:
        """The blocks in order, and what follows them (kept trainable when the last blocks are)."""
        return list(self.blocks.layers), [self.final_norm]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        patches = self.patch_embedding(images).flatten(2).transpose(1, 2)  # [B, N, width]
        if patches.shape[1] + 1 != self.position_embedding.shape[1]:
            raise ValueError(f"images of size {tuple(images.shape[-2:])} do not match the tower's "
                             f"{self.position_embedding.shape[1] - 1} patches; resize to the image_size "
                             f"the tower was built with")
        tokens = torch.cat([self.class_token.expand(patches.shape[0], -1, -1), patches], dim=1)
        hidden = self.final_norm(run_blocks(self.blocks, tokens + self.position_embedding, self.grad_checkpointing))
        return hidden[:, 0]


@IMAGE_TOWERS.register("vit-tiny")
def vit_tiny(in_channels: int, image_size: int, **options) -> ViT:
    return ViT(in_channels, image_size, **{"patch_size": 4, "width": 96, "depth": 4, "heads": 3,
                                           "mlp_ratio": 2.0, **options})


@IMAGE_TOWERS.register("vit-small")
def vit_small(in_channels: int, image_size: int, **options) -> ViT:
    return ViT(in_channels, image_size, **{"patch_size": 4, "width": 192, "depth": 6, "heads": 3,
                                           "mlp_ratio": 4.0, **options})
