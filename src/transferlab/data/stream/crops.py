"""Random resized crops (and mirroring) of full-resolution images, drawn per sample from (seed, step, row).

The box follows torchvision's `RandomResizedCrop.get_params` (ten tries at an area in `scale` and a
log-uniform aspect ratio in `ratio`, then the centre crop at the nearest allowed ratio), which is what
open_clip trains with. Its random numbers come from a generator seeded by (seed, step, row of the global
batch) alone, so a sample is cropped the same whichever process or loader worker decodes it, and a resumed
run crops exactly as an uninterrupted one.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from transferlab.config import AugmentSpec
from transferlab.runtime import derived_random


@dataclass(frozen=True)
class CropDraws:
    seed: int
    scale: tuple[float, float]
    ratio: tuple[float, float]
    flip: bool

    @classmethod
    def for_spec(cls, spec: AugmentSpec, seed: int) -> CropDraws | None:
        """The draws `spec` asks for, or None when images are their centre square, unmirrored."""
        if not spec.enabled or not (spec.crops or spec.flip):
            return None
        return cls(seed, tuple(spec.crop_scale), tuple(spec.crop_ratio), spec.flip)

    def crop(self, step: int, row: int):
        """The `Crop` (images.decode_image) of row `row` of step `step`'s global batch."""
        draw = derived_random(self.seed, "crop", step, row)

        def crop(width: int, height: int) -> tuple[tuple[float, float, float, float], bool]:
            if self.scale == (1.0, 1.0):
                left, top, w, h = _centre_square(width, height)
            else:
                left, top, w, h = _box(width, height, self.scale, self.ratio, draw)
            return (left, top, left + w, top + h), self.flip and draw.random() < 0.5
        return crop


def _centre_square(width: int, height: int) -> tuple[int, int, int, int]:
    side = min(width, height)
    return (width - side) // 2, (height - side) // 2, side, side


def _box(width: int, height: int, scale: tuple[float, float], ratio: tuple[float, float],
         draw: random.Random) -> tuple[int, int, int, int]:
    """(left, top, width, height) of a random crop, as torchvision's RandomResizedCrop draws it."""
    area = width * height
    log_low, log_high = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        target = area * draw.uniform(*scale)
        aspect = math.exp(draw.uniform(log_low, log_high))
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            return draw.randint(0, width - w), draw.randint(0, height - h), w, h
    aspect = width / height
    if aspect < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif aspect > ratio[1]:
        w, h = round(height * ratio[1]), height
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h
