"""Embedding a shard's pairs for the model steps: near-duplicate search and the score filter.

Models are given as model references (a run or checkpoint directory, `openclip:...`, `hf:...`) and loaded
once per process. The near-duplicate model embeds images when it has an image tower and captions when it
has a text tower; the score model needs both, and a pair's score is the cosine similarity of its image and
caption embeddings. When any model reads images, a pair without a decodable image is removed ("no image",
"undecodable image"). Pairs are decoded as they stream past and embedded in batches, so a shard's images
are never all in memory.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from transferlab.curate.settings import Settings
from transferlab.data.images import BadImage, decode_image
from transferlab.evaluate.features import embed_images, embed_texts
from transferlab.models.encoder import Encoder

BATCH = 256


@lru_cache(maxsize=2)
def load_encoder(ref: str, device: str) -> Encoder:
    from transferlab.models.references import load_model
    from transferlab.runtime import resolve_device

    return load_model(ref, resolve_device(device)).encoder


class PairEmbedder:
    """Collects the pairs `add` accepts and embeds them; `arrays` gives one row per accepted pair."""

    def __init__(self, settings: Settings) -> None:
        self.near = load_encoder(settings.near_dup_model, settings.device) if settings.near_dup_model else None
        self.score = load_encoder(settings.score_model, settings.device) if settings.score_model else None
        if self.score:
            self.score.require("image", f"The score filter (--score-model {settings.score_model})")
            self.score.require("text", f"The score filter (--score-model {settings.score_model})")
        self.encoders = list({id(e): e for e in (self.near, self.score) if e}.values())
        self.needs_images = any(e.encode_image is not None for e in self.encoders)
        self.images: dict[int, list[torch.Tensor]] = {id(e): [] for e in self.encoders}
        self.captions: list[str] = []
        self.done: dict[tuple[int, str], list[torch.Tensor]] = {}

    def add(self, image: bytes, caption: str) -> str | None:
        """Queue a pair for embedding; or the reason it cannot be embedded."""
        decoded = {}
        for encoder in self.encoders:
            if encoder.encode_image is None:
                continue
            if not image:
                return "no image"
            try:
                decoded[id(encoder)] = decode_image(image, encoder.image_size, encoder.channels)
            except BadImage:
                return "undecodable image"
        for key, tensor in decoded.items():
            self.images[key].append(tensor)
        self.captions.append(caption)
        if len(self.captions) == BATCH:
            self._flush()
        return None

    def _flush(self) -> None:
        if not self.captions:
            return
        for encoder in self.encoders:
            if encoder.encode_image is not None:
                images = torch.stack(self.images[id(encoder)])
                self.done.setdefault((id(encoder), "image"), []).append(embed_images(encoder, images, BATCH))
                self.images[id(encoder)] = []
            if encoder.encode_text is not None:
                self.done.setdefault((id(encoder), "text"), []).append(embed_texts(encoder, self.captions, BATCH))
        self.captions = []

    def _embeddings(self, encoder: Encoder, modality: str) -> torch.Tensor:
        chunks = self.done.get((id(encoder), modality))
        return torch.nn.functional.normalize(torch.cat(chunks), dim=1) if chunks else torch.zeros(0, 0)

    def arrays(self) -> dict[str, np.ndarray]:
        """image_embeddings / caption_embeddings of the near-duplicate model and scores of the score model,
        for the pairs accepted so far, in order."""
        self._flush()
        found = {}
        if self.near and self.near.encode_image is not None:
            found["image_embeddings"] = self._embeddings(self.near, "image").numpy()
        if self.near and self.near.encode_text is not None:
            found["caption_embeddings"] = self._embeddings(self.near, "text").numpy()
        if self.score:
            image, text = self._embeddings(self.score, "image"), self._embeddings(self.score, "text")
            found["scores"] = (image * text).sum(1).numpy() if len(image) else np.zeros(0, dtype=np.float32)
        return found
