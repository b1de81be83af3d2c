"""Towers by name, as timm does it: `create_image_tower('cnn-small', ...)`, `list_towers('vit*')`.

An image tower is an nn.Module built as `factory(in_channels=, image_size=, **options)` that maps float
images [B, C, H, W] to features [B, width] and has an int attribute `width`. A text tower is built as
`factory(**options)`, has `width`, `tokenize(list[str]) -> dict[str, Tensor]` and `forward(tokens) ->
[B, width]`; `external_weights = True` marks a pretrained tower whose weights come from an installed
package and are not copied into checkpoints while it is locked; `projected = True` marks a tower whose
output is already in the embedding space (open_clip's towers end in their own projection).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable

from torch import nn

from transferlab.errors import UserError, did_you_mean


class Registry:
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._factories: dict[str, Callable[..., nn.Module]] = {}

    def register(self, name: str) -> Callable:
        def add(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
            if name in self._factories:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._factories[name] = factory
            return factory
        return add

    def names(self, pattern: str = "*") -> list[str]:
        return sorted(n for n in self._factories if fnmatch.fnmatch(n, pattern))

    def create(self, name: str, **kwargs) -> nn.Module:
        if name not in self._factories:
            raise UserError(f"Unknown {self.kind} '{name}'.{did_you_mean(name, self._factories)} "
                            f"Available: {', '.join(self.names())}.")
        try:
            return self._factories[name](**kwargs)
        except TypeError as err:
            raise UserError(f"{self.kind} '{name}' does not accept these options ({err}). Check "
                            f"model.*.options in the recipe.") from None


OPENCLIP = "openclip:"  # `openclip:<config>`: the tower of an open_clip model config (models/openclip_towers.py)
IMAGE_TOWERS = Registry("image tower")
TEXT_TOWERS = Registry("text tower")


def _load_builtin_towers() -> None:
    # Importing the modules registers their towers.
    from transferlab.models import cnn, minilm, text_transformer, vit  # noqa: F401


def create_image_tower(name: str, in_channels: int, image_size: int, **options) -> nn.Module:
    if name.startswith(OPENCLIP):
        from transferlab.models.openclip_towers import OpenClipImageTower

        return OpenClipImageTower(name.removeprefix(OPENCLIP), in_channels, image_size, **options)
    _load_builtin_towers()
    return IMAGE_TOWERS.create(name, in_channels=in_channels, image_size=image_size, **options)


def create_text_tower(name: str, **options) -> nn.Module:
    if name.startswith(OPENCLIP):
        from transferlab.models.openclip_towers import OpenClipTextTower

        return OpenClipTextTower(name.removeprefix(OPENCLIP), **options)
    _load_builtin_towers()
    return TEXT_TOWERS.create(name, **options)


def list_towers(pattern: str = "*") -> dict[str, list[str]]:
    """Registered tower names matching a shell-style wildcard, by kind."""
    _load_builtin_towers()
    return {"image": IMAGE_TOWERS.names(pattern), "text": TEXT_TOWERS.names(pattern)}
