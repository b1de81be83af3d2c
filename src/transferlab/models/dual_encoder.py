"""`DualEncoder`: an image tower and a text tower, linear projections into one embedding space, and a
learnable temperature (Radford et al., 2021, "Learning Transferable Visual Models From Natural Language
Supervision").

A locked tower (LiT: Zhai et al., 2022, "LiT: Zero-Shot Transfer with Locked-image text Tuning") is frozen
and kept in eval mode; its projection head still trains. With `unlocked_blocks: N` only its last N blocks
(and what follows them) train, and only the frozen part runs in eval mode. A fully locked tower with
external weights (a pretrained package) is left out of `saved_state_dict`, so checkpoints hold only what
training changes. The text tower is optional (image-only objectives); SigLIP adds a learnable logit bias.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from transferlab.config import ModelSpec, TowerSpec
from transferlab.data.transforms import normalize, to_unit
from transferlab.errors import UserError
from transferlab.models.registry import create_image_tower, create_text_tower


class DualEncoder(nn.Module):
    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.spec = spec
        self.image_tower = create_image_tower(spec.image.name, in_channels=spec.channels,
                                              image_size=spec.image_size, **spec.image.options)
        self.image_proj = nn.Linear(self.image_tower.width, spec.embed_dim, bias=False)
        self.text_tower = self.text_proj = None
        if spec.text is not None:
            self.text_tower = create_text_tower(spec.text.name, **spec.text.options)
            self.text_proj = nn.Linear(self.text_tower.width, spec.embed_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / spec.init_temperature)))
        self.logit_bias = None if spec.init_logit_bias is None else nn.Parameter(torch.tensor(spec.init_logit_bias))
        for tower, tower_spec in self._towers():
            if tower_spec.locked:
                _lock(tower, tower_spec.unlocked_blocks)
            if spec.grad_checkpointing:
                _enable_grad_checkpointing(tower, tower_spec.name)
        self.train()

    def _towers(self) -> list[tuple[nn.Module, TowerSpec]]:
        towers = [(self.image_tower, self.spec.image)]
        return towers + ([(self.text_tower, self.spec.text)] if self.text_tower is not None else [])

    @property
    def locked_text(self) -> bool:
        """The text tower is wholly frozen, so a caption's features never change during training."""
        return self.spec.text is not None and self.spec.text.locked and self.spec.text.unlocked_blocks == 0

    def train(self, mode: bool = True) -> DualEncoder:
        super().train(mode)
        for tower, tower_spec in self._towers():
            if tower_spec.locked:
                _frozen_to_eval(tower)
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
        """Everything but wholly locked towers whose weights come from an installed package."""
        names = {id(self.image_tower): "image_tower", id(self.text_tower): "text_tower"}
        skip = [f"{names[id(tower)]}." for tower, tower_spec in self._towers()
                if tower_spec.locked and not tower_spec.unlocked_blocks and getattr(tower, "external_weights", False)]
        return {k: v for k, v in self.state_dict().items() if not any(k.startswith(s) for s in skip)}

    def load_saved_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        expected = self.saved_state_dict()
        missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
        if missing or unexpected:
            raise ValueError(f"weights do not fit this model: missing {missing[:5]}, unexpected {unexpected[:5]}")
        self.load_state_dict(state, strict=False)


def _lock(tower: nn.Module, unlocked_blocks: int) -> None:
    tower.requires_grad_(False)
    if unlocked_blocks:
        blocks, after = tower.lockable_blocks()
        if unlocked_blocks > len(blocks):
            raise UserError(f"unlocked_blocks is {unlocked_blocks} but the tower has {len(blocks)} blocks.")
        for module in blocks[-unlocked_blocks:] + after:
            module.requires_grad_(True)


def _frozen_to_eval(module: nn.Module) -> None:
    """Put every wholly frozen submodule in eval mode (no dropout, no BatchNorm updates); the rest trains."""
    parameters = list(module.parameters())
    if parameters and not any(p.requires_grad for p in parameters):
        module.eval()
        return
    for child in module.children():
        _frozen_to_eval(child)


def _enable_grad_checkpointing(tower: nn.Module, name: str) -> None:
    if not hasattr(tower, "set_grad_checkpointing"):
        raise UserError(f"model.grad_checkpointing is on but tower '{name}' does not support it (it applies to "
                        f"the transformer towers: vit-*, text-transformer-*, minilm-l6). Turn it off.")
    tower.set_grad_checkpointing(True)
