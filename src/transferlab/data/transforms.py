"""Batched image transforms on tensors: normalisation and seeded augmentation.

Augmentation runs on whole batches (one affine grid, a few interpolations) instead of per-image PIL
calls, and draws every random number from the generator it is given, so a step's augmentation depends
only on (seed, step): a resumed run sees exactly the images an uninterrupted run would have seen.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from transferlab.config import AugmentSpec
from transferlab.runtime import to_device


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 [B, C, H, W] → float in [0, 1]."""
    return images.float().div_(255)


def normalize(images: torch.Tensor, mean: list[float], std: list[float], inplace: bool = False) -> torch.Tensor:
    """Float images in [0, 1] → (x − mean) / std per channel; `inplace` overwrites `images` (the same numbers,
    without two batch-sized temporaries: on a CPU that is most of the cost of preparing a streamed batch)."""
    shape = (1, -1, 1, 1)
    mean_t = torch.tensor(mean, device=images.device).view(shape)
    std_t = torch.tensor(std, device=images.device).view(shape)
    return images.sub_(mean_t).div_(std_t) if inplace else (images - mean_t) / std_t


def crop_batch(images: torch.Tensor, crops: list) -> torch.Tensor:
    """Each image [B, C, S, S] resampled from its `Crop`'s box (data/stream/crops.py), mirrored where it says: the
    random resized crop of in-memory images, which are stored at the model's resolution already."""
    _, _, height, width = images.shape
    rows = []
    for crop in crops:
        (left, top, right, bottom), mirror = crop(width, height)
        sign = -1.0 if mirror else 1.0
        rows.append([[sign * (right - left) / width, 0.0, (left + right) / width - 1],
                     [0.0, (bottom - top) / height, (top + bottom) / height - 1]])
    theta = torch.tensor(rows, dtype=images.dtype, device=images.device)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def augment(images: torch.Tensor, spec: AugmentSpec, generator: torch.Generator,
            rows: tuple[int, int] | None = None) -> torch.Tensor:
    """Random rotation, scale and translation per image, then, with probability `low_res_prob`, a random
    loss of resolution (area-downsample to a side in [low_res_min, low_res_max], bilinear upsample back).

    images: float [B, C, H, W] in [0, 1]; the empty border is filled with 0.
    rows: (first, total) when `images` are rows first … first+B−1 of a batch of `total` (one rank's shard):
    the draws are made for all `total` rows and these rows take theirs, so every image is augmented as it
    would be in the whole batch.
    """
    if not spec.enabled:
        return images
    first, batch = rows or (0, len(images))
    mine = slice(first, first + len(images))
    _, _, height, width = images.shape

    def uniform(*shape: int) -> torch.Tensor:  # drawn on the host, copied without making it wait for a GPU
        return to_device(torch.rand(*shape, generator=generator) * 2 - 1, images.device)

    angle = uniform(batch)[mine] * math.radians(spec.rotate_degrees)
    scale = 1 + uniform(batch)[mine] * spec.scale
    shift = uniform(batch, 2)[mine] * spec.translate * 2  # grid coordinates span [-1, 1]
    if spec.rotate_degrees or spec.scale or spec.translate:  # else the identity: no resampling (same draws)
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
        grid = F.affine_grid(theta, list(images.shape), align_corners=False)
        images = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    else:
        images = images.clone()  # a new tensor either way: the loss of resolution below writes into it

    degrade = (torch.rand(batch, generator=generator) < spec.low_res_prob)[mine]
    high = min(spec.low_res_max, height - 1)
    sides = torch.randint(min(spec.low_res_min, high), high + 1, (batch,), generator=generator)[mine]
    for side in torch.unique(sides[degrade]).tolist():
        chosen = to_device(torch.nonzero(degrade & (sides == side)).flatten(), images.device)
        small = F.interpolate(images[chosen], size=(side, max(1, round(side * width / height))), mode="area")
        images[chosen] = F.interpolate(small, size=(height, width), mode="bilinear", align_corners=False)
    return images
