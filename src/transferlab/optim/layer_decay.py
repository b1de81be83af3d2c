"""Layer-wise learning-rate decay for fine-tuning (Clark et al. 2020, ELECTRA; Bao et al. 2022, BEiT).

Layers near the output adapt to the new task while those near the input, which hold the most general
features, move less. Each parameter gets a layer id and the learning rate

    lr(layer) = base_lr · decay^(num_layers − layer),

with embeddings at layer 0, transformer block i (`blocks.layers.<i>`) at i + 1, and whatever sits above
the blocks (final norm, projection heads, the temperature) at num_layers, the top, which trains at the
full rate. `num_layers` defaults to the top id found, i.e. depth + 1 for one tower as in BEiT.

`default_layer_of(model)` knows transferlab's towers: the ViT and text transformer (`patch_embedding`,
`class_token`, `position_embedding`, `token_embedding` → 0; `blocks.layers.<i>` → i + 1;
`final_norm` → top), any Hugging Face encoder (`embeddings` → 0, `encoder.layer.<i>` → i + 1), and
the CNN, whose parametrised stages `features.<k>` are layers 1, 2, ... in order. In a `DualEncoder` both
towers are aligned at the top, so a layer's decay depends on its distance from the output whichever tower
is deeper: the last block of each tower gets base_lr · decay, `image_proj`, `text_proj` and `logit_scale`
the full rate.

Groups keep the no-weight-decay rule of `parameter_groups` (nothing with fewer than two dimensions is
decayed) and carry `lr_scale`; a trainer applies its schedule per group as

    group["lr"] = lr_at(step, base_lr, ...) * group["lr_scale"]
"""

from __future__ import annotations

import re
from collections.abc import Callable

from torch import nn

_BLOCK = re.compile(r"(?:^|\.)layers?\.(\d+)\.")
_EMBEDDING = ("embed", "class_token", "cls_token")


def _tower_layers(tower: nn.Module, prefix: str) -> tuple[dict[str, int], int]:
    """({parameter name: layer id}, depth) of one tower; ids run 0 .. depth + 1."""
    features = getattr(tower, "features", None)
    if isinstance(features, nn.Sequential):  # the CNN: every stage with parameters is a layer
        stages = [key for key, child in features.named_children() if next(child.parameters(), None) is not None]
        stage_ids = {f"features.{key}.": i + 1 for i, key in enumerate(stages)}

        def block(name: str) -> int | None:
            return next((i for start, i in stage_ids.items() if name.startswith(start)), None)
    else:
        def block(name: str) -> int | None:
            match = _BLOCK.search(name)
            return int(match.group(1)) + 1 if match else None

    names = [name for name, _ in tower.named_parameters()]
    blocks = {name: block(name) for name in names}
    depth = max((i for i in blocks.values() if i is not None), default=0)
    layers = {}
    for name in names:
        if blocks[name] is not None:
            layers[prefix + name] = blocks[name]
        elif any(word in name for word in _EMBEDDING):
            layers[prefix + name] = 0
        else:
            layers[prefix + name] = depth + 1
    return layers, depth


def default_layer_of(model: nn.Module) -> Callable[[str], int]:
    """Layer ids of a DualEncoder (towers aligned at the top) or of a single tower, by parameter name."""
    towers = [name for name in ("image_tower", "text_tower") if isinstance(getattr(model, name, None), nn.Module)]
    if not towers:
        layers, _ = _tower_layers(model, "")
        return layers.__getitem__
    per_tower = {name: _tower_layers(getattr(model, name), f"{name}.") for name in towers}
    depth = max(tower_depth for _, tower_depth in per_tower.values())
    layers = {}
    for tower_layers, tower_depth in per_tower.values():
        layers.update({name: layer + depth - tower_depth for name, layer in tower_layers.items()})
    top = depth + 1
    return lambda name: layers.get(name, top)


def layer_decay_groups(model: nn.Module, base_lr: float, weight_decay: float, decay: float,
                       layer_of: Callable[[str], int] | None = None, num_layers: int | None = None) -> list[dict]:
    """Optimizer parameter groups, one per (layer, decayed or not), with `lr`, `lr_scale` and `layer`."""
    if not 0 < decay <= 1:
        raise ValueError(f"layer decay must lie in (0, 1]; got {decay}")
    layer_of = layer_of or default_layer_of(model)
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    layers = {name: layer_of(name) for name, _ in named}
    top = max(layers.values(), default=0) if num_layers is None else num_layers
    if any(layer > top for layer in layers.values()):
        raise ValueError(f"num_layers={num_layers} is below the highest layer id {max(layers.values())}")
    groups: dict[tuple[int, bool], dict] = {}
    for name, parameter in named:
        layer, decayed = layers[name], parameter.ndim >= 2
        if (layer, decayed) not in groups:
            scale = decay ** (top - layer)
            groups[layer, decayed] = {"params": [], "weight_decay": weight_decay if decayed else 0.0,
                                      "lr": base_lr * scale, "lr_scale": scale, "layer": layer}
        groups[layer, decayed]["params"].append(parameter)
    return [groups[key] for key in sorted(groups)]
