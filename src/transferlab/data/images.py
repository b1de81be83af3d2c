"""Decoding images into uint8 tensors at the model's resolution and channel count.

Files go through PIL (resize the shorter side with bicubic filtering and antialiasing, then centre-crop,
as open_clip's preprocessing does); arrays already in memory go through `resize_tensor`. Both return
uint8 [C, H, W] / [N, C, H, W] so a whole collection fits in memory at one byte per value.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from transferlab.data.tar.limits import MAX_IMAGE_BYTES

MAX_PIXELS = 20_000 * 20_000  # refuse decompression bombs beyond this many pixels
MAX_ASPECT = 16  # longer images are resampled from the crop's region only
# Only raster formats are opened: PIL picks the decoder from the content, not the name, and some (EPS) run
# external programs on what they read.
FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF", "PPM")


class BadImage(Exception):
    """An image that cannot be decoded. `reason` names the kind for a data report ("empty image",
    "truncated image", "undecodable image", "image too large"); `str(err)` says what is wrong."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


Crop = Callable[[int, int], tuple[tuple[float, float, float, float], bool]]


def decode_image(source: bytes | str | Path, size: int, channels: int, crop: Crop | None = None,
                 steps: Callable[[Image.Image], torch.Tensor] | None = None) -> torch.Tensor:
    """Decode an encoded image (bytes or a path) into uint8 [channels, size, size].

    Any decodable mode is converted (16-bit and float values scaled to 8 bits) and any size resized: the
    centre square, or with `crop` (width, height → box (left, top, right, bottom) and whether to mirror) that
    box of the full-resolution image, resampled to size × size. With `steps` (a model's own resize and crop,
    models/pixels.py) those make the pixels instead, from the image as decoded.
    Raises BadImage for a missing, empty, truncated or undecodable file, or one beyond MAX_PIXELS.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    img = _open(_read(source) if isinstance(source, (str, Path)) else source)
    try:
        img.load()
    except Exception as err:  # PIL's decoders raise many types on damaged data; none is a bug of ours
        raise BadImage("truncated image", f"the image data is truncated or damaged ({_describe(err)})") from err
    if steps is not None:
        return steps(_to_8bit(img))
    try:
        img = _to_8bit(img).convert("L" if channels == 1 else "RGB")
    except ValueError as err:
        raise BadImage("undecodable image", f"its mode {img.mode} cannot be converted ({err})") from err
    if crop is None:
        return _resize_crop(img, size)
    box, mirror = crop(img.width, img.height)
    img = img.resize((size, size), Image.Resampling.BICUBIC, box=box)
    if mirror:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return _as_tensor(img)


def _read(path: str | Path) -> bytes:
    try:
        if Path(path).stat().st_size > MAX_IMAGE_BYTES:
            raise BadImage("image too large", f"the file is larger than {MAX_IMAGE_BYTES // 2**20} MiB")
        return Path(path).read_bytes()
    except FileNotFoundError as err:
        raise BadImage("missing image", "file not found") from err
    except OSError as err:
        raise BadImage("undecodable image", f"the file cannot be read ({_describe(err)})") from err


def _open(data: bytes) -> Image.Image:
    """The image in `data`, its header read and its size checked, its pixels not yet decoded."""
    if not data:
        raise BadImage("empty image", "the file is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise BadImage("image too large", str(err)) from err
    except Image.UnidentifiedImageError as err:
        raise BadImage("undecodable image", f"not an image in a supported format ({', '.join(FORMATS)})") from err
    except Exception as err:  # a damaged header can make PIL raise nearly anything
        raise BadImage("undecodable image", f"the image header is damaged ({_describe(err)})") from err
    if img.width * img.height > MAX_PIXELS:
        raise BadImage("image too large", f"{img.width}x{img.height} pixels is more than the {MAX_PIXELS} allowed")
    if not img.width or not img.height:
        raise BadImage("undecodable image", f"the image is {img.width}x{img.height} pixels")
    return img


def _describe(err: Exception) -> str:
    return f"{type(err).__name__}: {err}" if str(err) else type(err).__name__


def _to_8bit(img: Image.Image) -> Image.Image:
    """16-bit and 32-bit integer images (as 16-bit data) and float images (as 0..1) scaled to 8-bit grey;
    `convert` would clip them to 255 instead, turning most of a 16-bit scan white."""
    if img.mode.startswith("I"):
        values = np.asarray(img).astype(np.float32).clip(0, 65535) / 257
    elif img.mode == "F":
        values = np.asarray(img).astype(np.float32).clip(0, 1) * 255
    else:
        return img
    return Image.fromarray(np.nan_to_num(values).round().astype(np.uint8))


def _resize_crop(img: Image.Image, size: int) -> torch.Tensor:
    """Resize the shorter side to `size` and keep the centre square, as uint8 [C, size, size].

    Sizes and offsets follow torchvision's `Resize(size)` + `CenterCrop(size)` (open_clip's preprocessing):
    the long side is truncated, the crop offset rounded, so both see the very same pixels.
    """
    short, long = sorted((img.width, img.height))
    resized_long = int(size * long / short)
    w, h = (size, resized_long) if img.width <= img.height else (resized_long, size)
    left, top = int(round((w - size) / 2.0)), int(round((h - size) / 2.0))
    if resized_long <= MAX_ASPECT * size:
        img = img.resize((w, h), Image.Resampling.BICUBIC).crop((left, top, left + size, top + size))
    else:  # resample only the crop's source region, not a 28 x 28,000,000 image (within 1 grey level)
        box = (left * img.width / w, top * img.height / h, (left + size) * img.width / w,
               (top + size) * img.height / h)
        img = img.resize((size, size), Image.Resampling.BICUBIC, box=box, reducing_gap=None)
    return _as_tensor(img)


def _as_tensor(img: Image.Image) -> torch.Tensor:
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
