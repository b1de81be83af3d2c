"""A library's published image transform, cut into transferlab's two steps: pixels, then normalisation.

open_clip and timm publish a checkpoint's preprocessing as a torchvision `Compose`: steps on the PIL image
(resize, crop, colour mode), then `ToTensor` and `Normalize`. transferlab keeps images as uint8 tensors and
normalises them on the device, so the Compose is cut before `ToTensor`: `decode` runs the PIL steps and
returns their uint8 pixels, and `normalize(to_unit(x), mean, std)` is the very float maths of `ToTensor` +
`Normalize`. A model then sees, from `decode` + `Encoder.preprocess`, exactly what the library's own
transform gives it, for any image size, aspect ratio and mode.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image


@dataclass
class PixelSteps:
    decode: Callable[[Image.Image], torch.Tensor]  # PIL image -> uint8 [3, H, W], as the library resizes and crops
    mean: list[float]
    std: list[float]
    description: str  # the PIL steps, as the library prints them (for fingerprints and model cards)


def pixel_steps(transform) -> PixelSteps:
    """Split a torchvision Compose of PIL steps + ToTensor + Normalize (an evaluation transform of open_clip
    or timm) into a decode function and the normalisation's mean and std."""
    steps = list(transform.transforms)
    names = [type(step).__name__ for step in steps]
    if len(steps) < 2 or not names[-2].endswith("ToTensor") or names[-1] != "Normalize":
        raise ValueError(f"expected PIL steps, then ToTensor and Normalize; got {names}")
    pil_steps, normalize = steps[:-2], steps[-1]

    def decode(image: Image.Image) -> torch.Tensor:
        for step in pil_steps:
            image = step(image)
        # after the library's steps, as open_clip converts: a grey image is resized once, then repeated
        array = np.asarray(image.convert("RGB"), dtype=np.uint8)
        return torch.from_numpy(array.transpose(2, 0, 1).copy())

    return PixelSteps(decode, [float(m) for m in normalize.mean], [float(s) for s in normalize.std],
                      "; ".join(repr(step) for step in pil_steps))
