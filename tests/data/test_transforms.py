"""Normalisation and the seeded batch augmentation (affine jitter, random loss of resolution)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from transferlab.config import AugmentSpec
from transferlab.data.transforms import augment, normalize, to_unit

STILL = {"rotate_degrees": 0.0, "scale": 0.0, "translate": 0.0}


def images(batch: int = 6, channels: int = 1, size: int = 28) -> torch.Tensor:
    return torch.rand(batch, channels, size, size, generator=torch.Generator().manual_seed(0))


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_to_unit_maps_uint8_to_unit_interval():
    assert torch.equal(to_unit(torch.tensor([0, 51, 255], dtype=torch.uint8)), torch.tensor([0.0, 0.2, 1.0]))


def test_normalize_is_per_channel_closed_form():
    x = images(channels=3)
    out = normalize(x, [0.1, 0.5, 0.9], [0.2, 0.5, 2.0])
    for c, (mean, std) in enumerate([(0.1, 0.2), (0.5, 0.5), (0.9, 2.0)]):
        assert torch.allclose(out[:, c], (x[:, c] - mean) / std)


def test_normalize_broadcasts_a_single_value_over_channels():
    x = images(channels=3)
    assert torch.allclose(normalize(x, [0.5], [0.25]), x * 4 - 2)


def test_disabled_augment_is_identity():
    x = images()
    assert torch.equal(augment(x, AugmentSpec(enabled=False), seeded(0)), x)


def test_augment_without_jitter_or_low_res_reproduces_input():
    x = images(channels=3)
    out = augment(x, AugmentSpec(**STILL, low_res_prob=0.0), seeded(0))
    assert (out - x).abs().max() < 1e-5


def test_augment_keeps_shape_dtype_and_input():
    x = images(channels=3)
    before = x.clone()
    out = augment(x, AugmentSpec(), seeded(0))
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.equal(x, before)


def test_augment_depends_only_on_the_seed():
    x, spec = images(), AugmentSpec()
    first = augment(x, spec, seeded(3))
    assert torch.equal(first, augment(x, spec, seeded(3)))
    assert not torch.allclose(first, augment(x, spec, seeded(4)))


def test_low_res_equals_area_down_then_bilinear_up():
    x = images()
    out = augment(x, AugmentSpec(**STILL, low_res_prob=1.0, low_res_min=7, low_res_max=7), seeded(0))
    small = F.interpolate(x, size=(7, 7), mode="area")
    expected = F.interpolate(small, size=(28, 28), mode="bilinear", align_corners=False)
    assert (out - expected).abs().max() < 1e-5
    assert (out - x).abs().max() > 0.1
