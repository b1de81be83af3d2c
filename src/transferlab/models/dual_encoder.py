"""`DualEncoder`: an image tower and a text tower, linear projections into one embedding space, and a
learnable temperature (Radford et al., 2021, "Learning Transferable Visual Models From Natural Language
Supervision").

A locked tower (LiT: Zhai et al., 2022, "LiT: Zero-Shot Transfer with Locked-image text Tuning") is frozen
and kept in eval mode; its projection head still trains. With `unlocked_blocks: N` only its last N blocks
(and what follows them) train, and only the frozen part runs in eval mode. A fully locked tower with
external weights (a pretrained package) is left out of `saved_state_dict`, so checkpoints hold only what
training changes. The text tower is optional (image-only objectives); SigLIP adds a learnable logit bias.
Towers that end in their own projection (`projected`, as open_clip's do) get none. A text-text model has no
image tower: its left texts ("queries") go through `query` — a tower and projection of their own, or, when
`query` is null, the text tower and projection themselves (siamese).
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
from transferlab.runtime import to_device


class DualEncoder(nn.Module):
    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.spec = spec
        self.image_tower = self.image_proj = self.text_tower = self.text_proj = None
        self.query_tower = self.query_proj = None
        if spec.image is not None:
            self.image_tower = create_image_tower(spec.image.name, in_channels=spec.channels,
                                                  image_size=spec.image_size, **spec.image.options)
            self.image_proj = _projection(self.image_tower, spec.image.name, spec.embed_dim)
        if spec.text is not None:
            self.text_tower = create_text_tower(spec.text.name, **spec.text.options)
            self.text_proj = _projection(self.text_tower, spec.text.name, spec.embed_dim)
        if spec.query is not None:
            self.query_tower = create_text_tower(spec.query.name, **spec.query.options)
            self.query_proj = _projection(self.query_tower, spec.query.name, spec.embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / spec.init_temperature)))
        self.logit_bias = None if spec.init_logit_bias is None else nn.Parameter(torch.tensor(spec.init_logit_bias))
        for tower, tower_spec in self.towers():
            if tower_spec.locked:
                _lock(tower, tower_spec.unlocked_blocks)
            if spec.grad_checkpointing:
                _enable_grad_checkpointing(tower, tower_spec.name)
        self.train()

    def towers(self) -> list[tuple[nn.Module, TowerSpec]]:
        towers = [(self.image_tower, self.spec.image), (self.text_tower, self.spec.text),
                  (self.query_tower, self.spec.query)]
        return [(tower, spec) for tower, spec in towers if tower is not None]

    def text_frozen(self, query: bool = False) -> bool:
        """The (query) text tower is wholly frozen, so a text's features never change during training."""
        spec = self.spec.query if query and self.spec.query is not None else self.spec.text
        return spec is not None and spec.locked and spec.unlocked_blocks == 0

    def train(self, mode: bool = True) -> DualEncoder:
        super().train(mode)
        for tower, tower_spec in self.towers():
            if tower_spec.locked:
                _frozen_to_eval(tower)
        return self

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images [B, C, H, W] → normalised float input of the image tower."""
        return normalize(to_unit(images), self.spec.mean, self.spec.std, inplace=True)  # to_unit made a new tensor

    def encode_image(self, images: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """Embeddings of preprocessed float images."""
        embedding = self.image_proj(self.image_tower(images))
        return F.normalize(embedding, dim=-1) if normalize else embedding

    def text_tower_for(self, query: bool = False) -> nn.Module:
        """The tower that embeds captions, or, with `query`, a text-text model's queries (the same one if shared)."""
        return self.query_tower if query and self.query_tower is not None else self.text_tower

    def text_features(self, texts: list[str], query: bool = False, batch_size: int = 256) -> torch.Tensor:
        """Text tower outputs (before projection), computed in chunks; the query tower's if `query`."""
        tower = self.text_tower_for(query)
        device = self.logit_scale.device
        chunks = [tower({k: to_device(v, device) if isinstance(v, torch.Tensor) else v
                         for k, v in tower.tokenize(texts[i:i + batch_size]).items()})
                  for i in range(0, len(texts), batch_size)]
        return torch.cat(chunks) if chunks else torch.zeros(0, tower.width, device=device)

    def project_text(self, features: torch.Tensor, normalize: bool = True, query: bool = False) -> torch.Tensor:
        projection = self.query_proj if query and self.query_proj is not None else self.text_proj
        embedding = projection(features)
        return F.normalize(embedding, dim=-1) if normalize else embedding

    def encode_text(self, texts: list[str], normalize: bool = True, query: bool = False) -> torch.Tensor:
        return self.project_text(self.text_features(texts, query), normalize, query)

    def saved_state_dict(self) -> dict[str, torch.Tensor]:
        """Everything but wholly locked towers whose weights come from an installed package."""
        names = {id(self.image_tower): "image_tower", id(self.text_tower): "text_tower",
                 id(self.query_tower): "query_tower"}
        skip = [f"{names[id(tower)]}." for tower, tower_spec in self.towers()
                if tower_spec.locked and not tower_spec.unlocked_blocks and getattr(tower, "external_weights", False)]
        return {k: v for k, v in self.state_dict().items() if not any(k.startswith(s) for s in skip)}

    def load_saved_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        expected = self.saved_state_dict()
        missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
        if missing or unexpected:
            raise ValueError(f"weights do not fit this model: missing {missing[:5]}, unexpected {unexpected[:5]}")
        self.load_state_dict(state, strict=False)


def _projection(tower: nn.Module, name: str, embed_dim: int) -> nn.Module:
    """A linear map of the tower's features into the embedding space; none for a tower that ends in its own."""
    if not getattr(tower, "projected", False):
        return nn.Linear(tower.width, embed_dim, bias=False)
    if tower.width != embed_dim:
        raise UserError(f"Tower '{name}' ends in its own projection to {tower.width} dimensions, but model.embed_dim "
                        f"is {embed_dim}. Set model.embed_dim: {tower.width}.")
    return nn.Identity()


def _lock(tower: nn.Module, unlocked_blocks: int) -> None:
    tower.requires_grad_(False)
    if unlocked_blocks:
        if not hasattr(tower, "lockable_blocks"):
            raise UserError(f"unlocked_blocks is {unlocked_blocks} but this tower ({type(tower).__name__}) is locked "
                            f"or trained as a whole. Set unlocked_blocks: 0, or locked: false.")
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
