"""`transferlab.load_model`: any reference as an object that embeds image files, PIL images, tensors and texts."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import transferlab
from transferlab.errors import UserError

pytest.importorskip("open_clip")
TINY_CLIP = {"embed_dim": 16, "vision_cfg": {"image_size": 16, "layers": 1, "width": 64, "patch_size": 8},
             "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}


def test_images_in_any_form_and_texts(tmp_path):
    config = tmp_path / "api-clip.json"
    config.write_text(json.dumps(TINY_CLIP))
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (41, 27, 3), dtype=np.uint8))
    image.save(tmp_path / "a.png")
    model = transferlab.load_model(f"openclip:{config}:random", device="cpu")
    pixels = model.encoder.decode(image)[None]
    embeddings = model.encode_image([tmp_path / "a.png", str(tmp_path / "a.png"),
                                     (tmp_path / "a.png").read_bytes(), image])
    assert embeddings.shape == (4, 16) and torch.allclose(embeddings.norm(dim=-1), torch.ones(4))
    assert torch.allclose(embeddings[1:], embeddings[:1].expand(3, -1), atol=1e-6)
    assert torch.allclose(model.encode_image(pixels), embeddings[:1], atol=1e-6)  # a batch of 1, not of 4
    texts = model.encode_text(["a photo of a cat", "a dog"])
    assert texts.shape == (2, 16) and (embeddings @ texts.T).shape == (4, 2)
    with pytest.raises(UserError, match="Cannot read image"):
        model.encode_image([tmp_path / "missing.png"])


def test_a_model_without_a_text_tower_says_so():
    pytest.importorskip("timm")
    model = transferlab.load_model("timm:resnet10t:random", device="cpu")
    assert model.encode_image(torch.zeros(1, 3, 176, 176, dtype=torch.uint8)).shape == (1, 512)
    with pytest.raises(UserError, match="encode_text needs a text encoder"):
        model.encode_text(["a cat"])
