"""A small VGG-style convolutional image tower for low-resolution images (digits, thumbnails).

Five 3x3 conv-BN-ReLU layers in three stages with two 2x2 max-pools, then global average pooling: about
0.3M parameters at the default width, enough for 28x28 digits in well under a minute on a CPU.
"""

from __future__ import annotations

import torch
from torch import nn

from transferlab.models.registry import IMAGE_TOWERS


def _conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class SmallCNN(nn.Module):
    external_weights = False

    def __init__(self, in_channels: int, image_size: int, width: int = 32) -> None:
        super().__init__()
        del image_size  # global pooling makes the tower resolution-agnostic
        self.width = 4 * width
        self.features = nn.Sequential(
            _conv(in_channels, width), _conv(width, width), nn.MaxPool2d(2),
            _conv(width, 2 * width), _conv(2 * width, 2 * width), nn.MaxPool2d(2),
            _conv(2 * width, 4 * width), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )

    def lockable_blocks(self) -> tuple[list[nn.Module], list[nn.Module]]:
        """The conv-BN-ReLU blocks in order, and what follows them (nothing with weights)."""
        return [m for m in self.features if isinstance(m, nn.Sequential)], []

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.features(images)


@IMAGE_TOWERS.register("cnn-small")
def cnn_small(in_channels: int, image_size: int, **options) -> SmallCNN:
    return SmallCNN(in_channels, image_size, **{"width": 32, **options})


@IMAGE_TOWERS.register("cnn-tiny")
def cnn_tiny(in_channels: int, image_size: int, **options) -> SmallCNN:
    return SmallCNN(in_channels, image_size, **{"width": 8, **options})
