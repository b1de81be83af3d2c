"""Hugging Face transformers dual encoders as evaluation encoders: `hf:<directory or hub id>` whose config.json
names a transformers model with `get_image_features` and `get_text_features` (CLIPModel, SiglipModel, ...).

The model's own processor, saved beside it, prepares both sides: its image processor resizes and crops
(`decode`, with rescaling and normalisation left to `Encoder.preprocess`, the same float maths), its tokenizer
tokenizes, padded as the model was trained (SigLIP to its full length: its text tower pools the last
position). Embeddings are the library's projected features, L2-normalised. Weights are read from safetensors
only, and no code from the directory runs (`trust_remote_code` stays off).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F

from transferlab.data.transforms import normalize
from transferlab.errors import UserError
from transferlab.models.encoder import Encoder, weights_fingerprint

PADDING = {"siglip": "max_length", "siglip2": "max_length"}  # by model_type; otherwise the batch's longest text


def model_type(directory: Path) -> str | None:
    """The `model_type` of a transformers model directory (its config.json), or None."""
    try:
        config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return config.get("model_type") if isinstance(config, dict) else None


def load_transformers(directory: Path, name: str, device: torch.device, source: dict, weights: dict) -> Encoder:
    from transformers import AutoModel, AutoProcessor

    kind = model_type(directory)
    try:
        model = AutoModel.from_pretrained(str(directory), use_safetensors=True)
        processor = AutoProcessor.from_pretrained(str(directory))
    except (OSError, ValueError, KeyError) as err:
        raise UserError(f"{directory} holds a transformers model (model_type {kind}) that cannot be loaded: "
                        f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}. It needs its "
                        f"weights as model.safetensors and its processor (model.save_pretrained(dir) and "
                        f"processor.save_pretrained(dir)).") from None
    if not (hasattr(model, "get_image_features") and hasattr(model, "get_text_features")):
        raise UserError(f"{directory} holds a transformers {type(model).__name__} (model_type {kind}), which is not "
                        f"an image-text dual encoder (no get_image_features and get_text_features). Save a text "
                        f"encoder as a sentence-transformers model (SentenceTransformer.save) to evaluate it.")
    images, tokenizer = getattr(processor, "image_processor", None), getattr(processor, "tokenizer", None)
    if images is None or tokenizer is None:
        raise UserError(f"{directory} has no image processor and tokenizer saved beside the model (found a "
                        f"{type(processor).__name__}). Save the model's processor into the directory: "
                        f"processor.save_pretrained(dir).")
    model = model.to(device).eval()
    padding = PADDING.get(kind, True)
    scale = images.rescale_factor if images.do_rescale else 1.0

    def preprocess(pixels: torch.Tensor) -> torch.Tensor:
        scaled = pixels.float() * scale
        return normalize(scaled, list(images.image_mean), list(images.image_std)) if images.do_normalize else scaled

    def decode(image) -> torch.Tensor:
        """The processor's own conversion, resize and crop, before its rescaling and normalisation."""
        pixels = images(images=image, do_rescale=False, do_normalize=False, return_tensors="pt")["pixel_values"][0]
        return pixels.round().clamp(0, 255).to(torch.uint8)

    def encode_image(pixels: torch.Tensor) -> torch.Tensor:
        return F.normalize(_features(model.get_image_features(pixel_values=pixels)), dim=-1)

    def encode_text(texts: list[str]) -> torch.Tensor:
        tokens = tokenizer(list(texts), padding=padding, truncation=True, return_tensors="pt").to(device)
        return F.normalize(_features(model.get_text_features(**tokens)), dim=-1)

    preprocessing = {key: value for key, value in images.to_dict().items() if not key.startswith("_")}
    return Encoder(
        name=name, module=model, image_size=_side(images), channels=3, preprocess=preprocess,
        encode_image=encode_image, encode_text=encode_text,
        fingerprint=weights_fingerprint(model, {"transformers": kind, "preprocess": preprocessing,
                                                "padding": padding}),
        decode=decode,
        source={**source, "library": "transformers", "class": type(model).__name__, "preprocessing": preprocessing},
        weights=weights)


def _features(output) -> torch.Tensor:
    """get_*_features returns the projected embeddings, or (transformers 5) an output holding them as pooler_output."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def _side(images) -> int:
    """The side of the square the image processor hands the model."""
    size = images.crop_size if getattr(images, "do_center_crop", False) else images.size
    side = size.get("height") or size.get("shortest_edge")
    if not side:
        raise UserError(f"The image processor {type(images).__name__} gives no fixed image size ({size}); "
                        f"transferlab evaluates models on square images of one size.")
    return int(side)
