"""`DualEncoder`: an image tower and a text tower, linear projections into one embedding space, and a
learnable temperature (Radford et al., 2021, "Learning Transferable Visual Models From Natural Language
Supervision").

A locked tower (LiT: Zhai et al., 2022, "LiT: Zero-Shot Transfer with Locked-image text Tuning") is frozen
and kept in eval mode; its projection head still trains. A locked tower with external weights (a
pretrained package) is left out of `saved_state_dict`, so checkpoints hold only what training changes.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from transferlab.config import ModelSpec
from transferlab.data.transforms import normalize, to_unit
from transferlab.models.registry import create_image_tower, create_text_tower


class DualEncoder(nn.Module):
    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.spec = spec
        self.image_tower = create_image_tower(spec.image.name, in_channels=spec.channels,
                                              image_size=spec.image_size, **spec.image.options)
        self.text_tower = create_text_tower(spec.text.name, **spec.text.options)
        self.image_proj = nn.Linear(self.image_tower.width, spec.embed_dim, bias=False)
        self.text_proj = nn.Linear(self.text_tower.width, spec.embed_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / spec.init_temperature)))
        for tower, tower_spec in ((self.image_tower, spec.image), (self.text_tower, spec.text)):
            if tower_spec.locked:
                tower.requires_grad_(False)
                tower.eval()

    @property
    def locked_text(self) -> bool:
        return self.spec.text.locked

    def train(self, mode: bool = True) -> DualEncoder:
        super().train(mode)
        for tower, tower_spec in ((self.image_tower, self.spec.image), (self.text_tower, self.spec.text)):
            if tower_spec.locked:
                tower.eval()
        return self

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images [B, C, H, W] → normalised float input of the image tower."""
        return normalize(to_unit(images), self.spec.mean, self.spec.std)

    def encode_image(self, images: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """Embeddings of preprocessed float images."""
        embedding = self.image_proj(self.image_tower(images))
        return F.normalize(embedding, dim=-1) if normalize else embedding

    def text_features(self, texts: list[str], batch_size: int = 256) -> torch.Tensor:
        """Text tower outputs (before projection), computed in chunks."""
        device = self.logit_scale.device
        chunks = [self.text_tower({k: v.to(device) if isinstance(v, torch.Tensor) else v
                                   for k, v in self.text_tower.tokenize(texts[i:i + batch_size]).items()})
                  for i in range(0, len(texts), batch_size)]
        return torch.cat(chunks) if chunks else torch.zeros(0, self.text_tower.width, device=device)

    def project_text(self, features: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        embedding = self.text_proj(features)
        return F.normalize(embedding, dim=-1) if normalize else embedding

    def encode_text(self, texts: list[str], normalize: bool = True) -> torch.Tensor:
        return self.project_text(self.text_features(texts), normalize)

    def saved_state_dict(self) -> dict[str, torch.Tensor]:
        """Everything but locked towers whose weights come from an installed package."""
        skip = [f"{name}." for name, tower, tower_spec in (("image_tower", self.image_tower, self.spec.image),
                                                          ("text_tower", self.text_tower, self.spec.text))
                if tower_spec.locked and getattr(tower, "external_weights", False)]
        return {k: v for k, v in self.state_dict().items() if not any(k.startswith(s) for s in skip)}

    def load_saved_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        expected = self.saved_state_dict()
        missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
        if missing or unexpected:
            raise ValueError(f"weights do not fit this model: missing {missing[:5]}, unexpected {unexpected[:5]}")
        self.load_state_dict(state, strict=False)
