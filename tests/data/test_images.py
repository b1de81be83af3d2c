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


@pytest.mark.parametrize("source, reason", [(b"", "empty image"), (b"\x00\x01garbage" * 20, "undecodable image"),
                                            (png(halves(30, 30))[:60], "truncated image")],
                         ids=["empty", "random", "truncated"])
def test_undecodable_bytes_raise_bad_image_with_a_reason(source, reason):
    with pytest.raises(BadImage) as err:
        decode_image(source, 8, 1)
    assert err.value.reason == reason and "BytesIO" not in str(err.value)


def test_only_raster_formats_are_opened():
    # PIL picks its decoder by content; an EPS file named .png would have it run Ghostscript
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\nshowpage\n"
    with pytest.raises(BadImage, match="not an image in a supported format") as err:
        decode_image(eps, 8, 1)
    assert err.value.reason == "undecodable image"


def test_16_bit_and_float_images_are_scaled_not_clipped():
    grey16 = np.array([[0, 128 * 257, 65535]], dtype=np.uint16).repeat(3, axis=0)
    assert decode_image(png(Image.fromarray(grey16)), 3, 1)[0, 1].tolist() == [0, 128, 255]
    floats = Image.fromarray(np.array([[0.0, 0.5, 1.0, 7.0]], dtype=np.float32).repeat(4, axis=0))
    buffer = io.BytesIO()
    floats.save(buffer, format="TIFF")
    assert decode_image(buffer.getvalue(), 4, 3)[:, 1].tolist() == [[0, 128, 255, 255]] * 3


def test_an_extreme_aspect_ratio_is_resized_without_a_huge_intermediate(monkeypatch):
    # resizing the whole 1x1,000,000 strip first would allocate 28x28,000,000 pixels
    sizes, resize = [], Image.Image.resize
    monkeypatch.setattr(Image.Image, "resize", lambda img, size, *args, **kw: sizes.append(size) or
                        resize(img, size, *args, **kw))
    out = decode_image(png(Image.new("L", (1, 1_000_000), 77)), 28, 1)
    assert out.shape == (1, 28, 28) and out.unique().tolist() == [77]
    assert sizes == [(28, 28)]


def test_an_oversized_file_is_refused_unread(tmp_path, monkeypatch):
    from transferlab.data import images

    monkeypatch.setattr(images, "MAX_IMAGE_BYTES", 10)
    (tmp_path / "big.png").write_bytes(png(halves(30, 30)))
    with pytest.raises(BadImage, match="larger than") as err:
        decode_image(tmp_path / "big.png", 8, 1)
    assert err.value.reason == "image too large"


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


@pytest.mark.parametrize(("width", "height"), [(33, 28), (28, 33), (640, 427), (300, 225), (231, 224), (500, 333),
                                               (28, 28), (7, 100)])
def test_resize_and_crop_give_the_pixels_of_open_clips_preprocessing(width, height):
    # torchvision's Resize(size) + CenterCrop(size), as open_clip evaluates: truncated long side, rounded offset
    from torchvision import transforms

    rng = np.random.default_rng(width * height)
    img = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    reference = transforms.Compose([transforms.Resize(32, transforms.InterpolationMode.BICUBIC),
                                    transforms.CenterCrop(32)])(img)
    expected = torch.from_numpy(np.asarray(reference).transpose(2, 0, 1).copy())
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    assert torch.equal(decode_image(buffer.getvalue(), 32, 3), expected)
