from __future__ import annotations

import pytest
import torch
from torch import nn

from transferlab.models.registry import IMAGE_TOWERS
from transferlab.models.vit import ViT


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_registered_names():
    assert {"vit-tiny", "vit-small"} <= set(IMAGE_TOWERS.names("vit*"))


@pytest.mark.parametrize("channels,size", [(1, 28), (3, 28), (1, 32), (3, 32)])
def test_output_shape(channels, size):
    tower = IMAGE_TOWERS.create("vit-tiny", in_channels=channels, image_size=size)
    out = tower(torch.randn(2, channels, size, size))
    assert out.shape == (2, tower.width) == (2, 96) and torch.isfinite(out).all()


def test_small_width_and_options_override():
    small = IMAGE_TOWERS.create("vit-small", in_channels=3, image_size=32)
    assert small(torch.randn(1, 3, 32, 32)).shape == (1, small.width) == (1, 192)
    tower = IMAGE_TOWERS.create("vit-tiny", in_channels=1, image_size=28, patch_size=7, width=48)
    assert tower.position_embedding.shape == (1, 1 + 16, 48)
    assert tower(torch.randn(1, 1, 28, 28)).shape == (1, 48)


def test_indivisible_image_size_raises():
    with pytest.raises(ValueError, match="divisible by patch_size"):
        ViT(1, 30, patch_size=4)


def test_wrong_input_size_raises():
    with pytest.raises(ValueError, match="image_size"):
        ViT(1, 28)(torch.randn(1, 1, 32, 32))


def test_param_counts_in_range():
    tiny = n_params(IMAGE_TOWERS.create("vit-tiny", in_channels=1, image_size=28))
    small = n_params(IMAGE_TOWERS.create("vit-small", in_channels=1, image_size=28))
    assert 200_000 < tiny < 1_000_000
    assert 1_000_000 < small < 5_000_000


def test_gradient_reaches_patch_embedding():
    tower = ViT(3, 32)
    tower(torch.randn(2, 3, 32, 32)).pow(2).sum().backward()
    assert tower.patch_embedding.weight.grad.abs().sum() > 0
    assert tower.position_embedding.grad.abs().sum() > 0


def test_images_change_outputs():
    tower = ViT(1, 28).eval()
    out = tower(torch.randn(2, 1, 28, 28))
    assert not torch.allclose(out[0], out[1], atol=1e-4)


def test_overfits_random_images():
    torch.manual_seed(0)
    images, labels = torch.randn(16, 1, 28, 28), torch.arange(16) % 4
    tower = IMAGE_TOWERS.create("vit-tiny", in_channels=1, image_size=28)
    head = nn.Linear(tower.width, 4)
    optimizer = torch.optim.Adam([*tower.parameters(), *head.parameters()], lr=1e-3)
    losses = []
    for _ in range(15):
        loss = nn.functional.cross_entropy(head(tower(images)), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
