"""Decoding images into uint8 tensors at the model's resolution and channel count.

Files go through PIL (resize the shorter side with bicubic filtering and antialiasing, then centre-crop,
as open_clip's preprocessing does); arrays already in memory go through `resize_tensor`. Both return
uint8 [C, H, W] / [N, C, H, W] so a whole collection fits in memory at one byte per value.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

MAX_PIXELS = 20_000 * 20_000  # refuse decompression bombs beyond this many pixels


class BadImage(Exception):
    """An image that cannot be decoded; `str(err)` is the reason, suitable for a data report."""


def decode_image(source: bytes | str | Path, size: int, channels: int) -> torch.Tensor:
    """Decode an encoded image (bytes or a path) into uint8 [channels, size, size].

    Raises BadImage for a missing, empty, truncated or undecodable file, or one beyond MAX_PIXELS.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    try:
        if isinstance(source, (str, Path)):
            source = Path(source).read_bytes()
        if not source:
            raise BadImage("empty file")
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(source)) as img:
                if img.width * img.height > MAX_PIXELS:
                    raise BadImage(f"{img.width}x{img.height} pixels is more than the {MAX_PIXELS} allowed")
                img.load()
                img = img.convert("L" if channels == 1 else "RGB")
    except BadImage:
        raise
    except FileNotFoundError as err:
        raise BadImage("file not found") from err
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError,
            Image.DecompressionBombWarning) as err:
        raise BadImage(f"cannot decode image ({type(err).__name__}: {err})") from err
    scale = size / min(img.width, img.height)
    w, h = max(size, round(img.width * scale)), max(size, round(img.height * scale))
    img = img.resize((w, h), Image.Resampling.BICUBIC, reducing_gap=None)
    left, top = (w - size) // 2, (h - size) // 2
    img = img.crop((left, top, left + size, top + size))
    array = np.asarray(img, dtype=np.uint8)
    array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
    return torch.from_numpy(array.copy())


def resize_tensor(images: torch.Tensor, size: int, channels: int) -> torch.Tensor:
    """Resize float images in [0, 1], [N, C, h, w], to uint8 [N, channels, size, size].

    Bilinear with antialiasing when shrinking; grey is repeated to RGB and RGB averaged to grey.
    """
    if images.shape[1] != channels:
        if images.shape[1] == 1:
            images = images.expand(-1, channels, -1, -1)
        else:
            images = images.mean(dim=1, keepdim=True).expand(-1, channels, -1, -1)
    if images.shape[-2:] != (size, size):
        images = F.interpolate(images.float(), size=(size, size), mode="bilinear", align_corners=False,
                               antialias=True)
    return (images.clamp(0, 1) * 255).round().to(torch.uint8)


def encode_png(image: torch.Tensor) -> bytes:
    """PNG bytes of a uint8 [C, H, W] tensor (C = 1 or 3)."""
    array = image.numpy()
    array = array[0] if array.shape[0] == 1 else array.transpose(1, 2, 0)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()
