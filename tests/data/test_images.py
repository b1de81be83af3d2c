"""Decoding image files to uint8 tensors, resizing in-memory arrays, and the PNG round trip."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from transferlab.data.images import BadImage, decode_image, encode_png, resize_tensor


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def halves(width: int, height: int) -> Image.Image:
    """Black on the left half, white on the right half."""
    array = np.zeros((height, width), dtype=np.uint8)
    array[:, width // 2:] = 255
    return Image.fromarray(array)


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "P"])
@pytest.mark.parametrize("channels", [1, 3])
def test_decode_gives_requested_channels_and_size(mode, channels):
    source = Image.new("RGB", (30, 20), (204, 51, 102)).convert(mode)  # a web-safe colour: "P" keeps it exact
    out = decode_image(png(source), 12, channels)
    assert out.shape == (channels, 12, 12)
    assert out.dtype == torch.uint8
    expected = np.asarray(source.convert("L" if channels == 1 else "RGB"))[0, 0]
    assert np.array_equal(out[:, 6, 6].numpy(), np.atleast_1d(expected))


def test_decode_reads_a_path(tmp_path):
    path = tmp_path / "red.png"
    Image.new("RGB", (5, 5), (255, 0, 0)).save(path)
    assert decode_image(path, 5, 3)[:, 2, 2].tolist() == [255, 0, 0]


def test_wide_image_is_resized_on_short_side_and_centre_cropped():
    out = decode_image(png(halves(80, 40)), 20, 1)[0].numpy().astype(int)
    # 80x40 -> 40x20, the crop keeps columns 10..29, so the black/white edge lands in the middle.
    assert out[:, :8].max() < 10
    assert out[:, 12:].min() > 245


def test_tall_image_keeps_its_vertical_centre():
    array = np.zeros((60, 20), dtype=np.uint8)
    array[25:35] = 255  # a white band around the centre row
    out = decode_image(png(Image.fromarray(array)), 10, 1)[0].numpy()
    # 20x60 -> 10x30, the crop keeps rows 10..19, so the band covers rows 2.5..7.5 of the crop.
    assert out[4:6].min() > 245
    assert out[0].max() < 10 and out[-1].max() < 10


@pytest.mark.parametrize("source", [b"", b"\x00\x01garbage" * 20, png(halves(30, 30))[:60]],
                         ids=["empty", "random", "truncated"])
def test_undecodable_bytes_raise_bad_image(source):
    with pytest.raises(BadImage):
        decode_image(source, 8, 1)


def test_missing_path_raises_bad_image(tmp_path):
    with pytest.raises(BadImage, match="not found"):
        decode_image(tmp_path / "missing.png", 8, 1)


def test_resize_tensor_repeats_grey_to_rgb():
    grey = torch.rand(2, 1, 5, 5, generator=torch.Generator().manual_seed(0))
    out = resize_tensor(grey, 5, 3)
    expected = (grey * 255).round().to(torch.uint8)
    for c in range(3):
        assert torch.equal(out[:, c:c + 1], expected)


def test_resize_tensor_averages_rgb_to_grey():
    rgb = torch.rand(2, 3, 5, 5, generator=torch.Generator().manual_seed(0))
    out = resize_tensor(rgb, 5, 1)
    expected = ((rgb[:, 0] + rgb[:, 1] + rgb[:, 2]) / 3 * 255).round()
    assert out.shape == (2, 1, 5, 5)
    assert (out[:, 0].float() - expected).abs().max() <= 1


def test_resize_tensor_resizes_and_clamps():
    out = resize_tensor(torch.full((1, 1, 16, 16), 1.5), 4, 1)
    assert out.shape == (1, 1, 4, 4)
    assert out.unique().tolist() == [255]


@pytest.mark.parametrize("channels", [1, 3])
def test_encode_png_then_decode_is_exact(channels):
    image = torch.randint(0, 256, (channels, 9, 9), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(decode_image(encode_png(image), 9, channels), image)
