"""`transferlab.load_model(ref)`: any model reference as an object that embeds images and texts.

The same references as `transferlab eval` (a run, a checkpoint, `openclip:`, `hf:`, `timm:`). Images may be
file paths, encoded bytes or PIL images, each decoded as the model's library publishes it (`Encoder.decode`:
open_clip's, timm's or the Hugging Face processor's own resize and crop; transferlab's shorter-side resize
and centre crop for transferlab models), or a uint8 tensor [N, C, H, W] already at `image_size`.
Embeddings are L2-normalised float32 tensors on the CPU, so `images @ texts.T` are cosine similarities.
"""

from __future__ import annotations

import io
from pathlib import Path

import torch
from PIL import Image

from transferlab.data.images import FORMATS, BadImage, decode_image
from transferlab.errors import UserError
from transferlab.models.encoder import Encoder

BATCH = 64


class Model:
    """A loaded model: `encode_image`, `encode_text`, the `Encoder` evaluation uses (`encoder`) and where its
    weights came from (`weights`, e.g. `{"origin": "random", "seed": 0, ...}`; models/weights.py)."""

    def __init__(self, encoder: Encoder) -> None:
        self.encoder = encoder
        self.name = encoder.name
        self.image_size = encoder.image_size
        self.weights = encoder.weights

    def __repr__(self) -> str:
        return f"Model({self.name!r})"

    @torch.no_grad()
    def encode_image(self, images) -> torch.Tensor:
        """Embeddings [N, D] of a list of images (paths, bytes or PIL images) or of a uint8 tensor [N, C, H, W]."""
        encode = self.encoder.require("image", "encode_image")
        pixels = images if isinstance(images, torch.Tensor) else torch.stack([self._decode(i) for i in images])
        device = self.encoder.device
        return torch.cat([encode(self.encoder.preprocess(pixels[start:start + BATCH].to(device))).float().cpu()
                          for start in range(0, len(pixels), BATCH)])

    @torch.no_grad()
    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """Embeddings [N, D] of a list of strings."""
        encode = self.encoder.require("text", "encode_text")
        texts = [texts] if isinstance(texts, str) else list(texts)
        return torch.cat([encode(texts[start:start + BATCH]).float().cpu() for start in range(0, len(texts), BATCH)])

    def _decode(self, image) -> torch.Tensor:
        if self.encoder.decode is None:  # transferlab's own decoding reads encoded bytes
            if isinstance(image, Image.Image):
                buffer = io.BytesIO()
                image.save(buffer, format="PNG")
                image = buffer.getvalue()
            try:
                return decode_image(image, self.encoder.image_size, self.encoder.channels)
            except BadImage as err:
                raise UserError(f"Cannot read image {str(image)[:200]}: {err}") from None
        if isinstance(image, (str, Path, bytes)):
            try:
                image = Image.open(io.BytesIO(image) if isinstance(image, bytes) else image, formats=FORMATS)
                image.load()
            except (OSError, ValueError) as err:
                raise UserError(f"Cannot read image {str(image)[:200]}: {err}") from None
        return self.encoder.decode(image)


def load_model(ref: str, device: str = "auto") -> Model:
    """The model `ref` names (see docs/evaluation.md, "Model references"), on `device` (auto, cpu, cuda, mps).

    A tiny open_clip configuration with random weights (`openclip:<config.json>:random`, so nothing is
    downloaded) shows the calls; a pretrained reference such as "openclip:ViT-B-32:laion2b_s34b_b79k"
    (fetched once into open_clip's cache) takes the same calls and gives meaningful similarities.

    >>> import json, tempfile
    >>> from pathlib import Path
    >>> import torch
    >>> from PIL import Image
    >>> tiny = {"embed_dim": 16, "vision_cfg": {"image_size": 16, "layers": 1, "width": 64, "patch_size": 8},
    ...         "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     config = Path(folder) / "tiny-clip.json"
    ...     _ = config.write_text(json.dumps(tiny))
    ...     model = load_model(f"openclip:{config}:random", device="cpu")
    >>> model, model.weights["origin"]
    (Model('openclip:tiny-clip:random'), 'random')
    >>> images = model.encode_image([Image.new("RGB", (40, 30), "red"), Image.new("RGB", (30, 40), "blue")])
    >>> texts = model.encode_text(["a red square", "a blue square", "a photo of a cat"])
    >>> images.shape, texts.shape
    (torch.Size([2, 16]), torch.Size([3, 16]))
    >>> torch.allclose(images.norm(dim=1), torch.ones(2))  # L2-normalised: images @ texts.T are cosines
    True
    >>> (images @ texts.T).shape
    torch.Size([2, 3])
    """
    from transferlab.models.references import load_model as load_reference
    from transferlab.runtime import resolve_device

    return Model(load_reference(ref, resolve_device(device)).encoder)
