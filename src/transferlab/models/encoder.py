"""`Encoder`: what evaluation needs of any model, whichever library built it.

Images go in as uint8 [B, C, H, W] at `image_size` with `channels` channels; `preprocess` turns them into
the model's input and `encode_image` into L2-normalised embeddings. `encode_text` embeds a list of strings
into the same space. Either is None for a model without that tower (an image-only tower, a text-only
sentence encoder). A text-text model embeds its left texts with `encode_query` (and has no images).
`fingerprint` changes whenever the weights or the preprocessing do, and keys the feature cache.

`decode` is the model's own way from a PIL image to those uint8 pixels: for a model from open_clip, timm
or transformers, that library's published resize and crop (interpolation, resize mode, crop fraction), so
`preprocess(decode(image))` is what the library's transform gives. `source` says where the model comes from
(library, name, license, preprocessing) for model cards and exports; `weights` where its weights come from
(models/weights.py: a pretrained tag, a file and its hash, a checkpoint, a random initialisation, ...), for
results.json's provenance.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from transferlab.errors import UserError


@dataclass
class Encoder:
    name: str
    module: nn.Module
    image_size: int
    channels: int
    preprocess: Callable[[torch.Tensor], torch.Tensor]
    encode_image: Callable[[torch.Tensor], torch.Tensor] | None
    encode_text: Callable[[list[str]], torch.Tensor] | None
    fingerprint: str
    run_dir: Path | None = None  # a transferlab run the model came from (its metrics.jsonl, its model card)
    encode_query: Callable[[list[str]], torch.Tensor] | None = None  # text-text models: the left texts
    decode: Callable | None = None  # PIL image -> uint8 [channels, H, W]; None: transferlab's own resize and crop
    source: dict = field(default_factory=dict)  # library, name, license, preprocessing
    weights: dict = field(default_factory=dict)  # the origin record of models/weights.py

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device

    def require(self, modality: str, work: str) -> Callable:
        """encode_image, encode_text or encode_query, or a UserError saying this model cannot do `work`."""
        encode = {"image": self.encode_image, "text": self.encode_text, "query": self.encode_query}[modality]
        if encode is None:
            fix = {"image": "evaluate it on text pairs (e.g. --suite text-pairs) or drop the image datasets from "
                            "eval.datasets",
                   "text": "drop the tasks that need text (zero-shot, retrieval, text-based few-shot methods) from "
                           "eval.tasks",
                   "query": "evaluate it on image datasets, or train a text-text model for text pairs"}[modality]
            article = "an" if modality == "image" else "a"
            raise UserError(f"{work} needs {article} {modality} encoder, but model '{self.name}' has none: {fix}.")
        return encode


def weights_fingerprint(module: nn.Module, config: dict, tensors: dict[str, torch.Tensor] | None = None) -> str:
    """SHA-256 of a JSON config and the bytes of the weights (`tensors`, default: the module's state)."""
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    for name, tensor in sorted((module.state_dict() if tensors is None else tensors).items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def from_dual_encoder(model, name: str, run_dir: Path | None = None, weights: dict | None = None) -> Encoder:
    """An Encoder over a transferlab DualEncoder whose weights came from `weights` (models/weights.py)."""
    text = query = image = None
    if model.text_tower is not None:
        def text(texts: list[str]) -> torch.Tensor:
            return model.encode_text(texts)
    if model.image_tower is not None:
        def image(images: torch.Tensor) -> torch.Tensor:
            return model.encode_image(images)
    else:
        def query(texts: list[str]) -> torch.Tensor:
            return model.encode_text(texts, query=True)
    return Encoder(
        name=name, module=model, image_size=model.spec.image_size, channels=model.spec.channels,
        preprocess=model.preprocess, encode_image=image, encode_text=text, encode_query=query,
        fingerprint=weights_fingerprint(model, model.spec.model_dump(mode="json"), model.saved_state_dict()),
        run_dir=run_dir, weights=weights or {})


ZEROSHOT_LOGIT_SCALE = 100.0  # CLIP's fixed temperature for zero-shot logits, s · x·w_c (Radford et al., 2021)


@torch.no_grad()
def zeroshot_weights(encode_text: Callable[[list[str]], torch.Tensor], classnames: list[str],
                     templates: list[str]) -> torch.Tensor:
    """The zero-shot classifier [K, D] with a prompt-template ensemble (Radford et al., 2021, section 3.1.4):
    w_c = normalise(mean_t normalise(f(template_t(c)))) for the text encoder f."""
    texts = [template.format(name) for name in classnames for template in templates]
    embeddings = F.normalize(encode_text(texts).float().cpu(), dim=-1)
    return F.normalize(embeddings.view(len(classnames), len(templates), -1).mean(dim=1), dim=-1)
