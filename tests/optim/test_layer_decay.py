"""Layer-wise lr decay: layer ids of the project's towers and lr = base_lr · decay^(num_layers − layer)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from transferlab.config import ModelSpec, TowerSpec
from transferlab.models.dual_encoder import DualEncoder
from transferlab.models.registry import create_image_tower
from transferlab.optim import create_optimizer, default_layer_of, layer_decay_groups


def lr_and_decay_of(groups: list[dict]) -> dict[int, tuple[float, float, float]]:
    """{id(param): (lr, lr_scale, weight_decay)}."""
    return {id(p): (g["lr"], g["lr_scale"], g["weight_decay"]) for g in groups for p in g["params"]}


def expected_vit_layer(name: str, depth: int) -> int:
    if name.startswith(("patch_embedding", "class_token", "position_embedding")):
        return 0
    if name.startswith("blocks.layers."):
        return int(name.split(".")[2]) + 1
    assert name.startswith("final_norm")
    return depth + 1


def test_vit_tower_lrs_follow_the_formula():
    tower = create_image_tower("vit-tiny", in_channels=1, image_size=28)  # depth 4
    groups = layer_decay_groups(tower, base_lr=1e-3, weight_decay=0.05, decay=0.7)
    got = lr_and_decay_of(groups)
    assert len(got) == len(list(tower.parameters()))
    for name, param in tower.named_parameters():
        layer = expected_vit_layer(name, depth=4)
        lr, scale, weight_decay = got[id(param)]
        assert scale == pytest.approx(0.7 ** (5 - layer)) and lr == pytest.approx(1e-3 * 0.7 ** (5 - layer))
        assert weight_decay == (0.05 if param.ndim >= 2 else 0.0)
    assert max(g["layer"] for g in groups) == 5
    assert got[id(tower.final_norm.weight)][1] == 1.0
    assert got[id(tower.blocks.layers[3].linear1.weight)][1] == pytest.approx(0.7)
    assert got[id(tower.class_token)][1] == pytest.approx(0.7 ** 5)


def test_dual_encoder_towers_are_aligned_at_the_top():
    model = DualEncoder(ModelSpec(image=TowerSpec(name="vit-tiny"),  # 4 blocks
                                  text=TowerSpec(name="text-transformer-tiny")))  # 2 blocks
    layer_of = default_layer_of(model)
    assert layer_of("image_tower.position_embedding") == 0
    assert layer_of("image_tower.blocks.layers.3.linear1.weight") == 4
    assert layer_of("text_tower.token_embedding.weight") == 2
    assert layer_of("text_tower.blocks.layers.0.norm1.weight") == 3
    assert layer_of("text_tower.blocks.layers.1.norm1.weight") == 4
    for top in ("image_tower.final_norm.weight", "text_tower.final_norm.bias", "image_proj.weight",
                "text_proj.weight", "logit_scale"):
        assert layer_of(top) == 5
    got = lr_and_decay_of(layer_decay_groups(model, 1.0, 0.1, decay=0.5))
    assert got[id(model.logit_scale)] == (1.0, 1.0, 0.0)
    assert got[id(model.text_proj.weight)] == (1.0, 1.0, 0.1)
    assert got[id(model.text_tower.blocks.layers[1].linear1.weight)][1] == 0.5
    assert got[id(model.image_tower.blocks.layers[3].linear1.weight)][1] == 0.5


def test_cnn_stages_are_layers_in_order():
    tower = create_image_tower("cnn-tiny", in_channels=1, image_size=28)
    layer_of = default_layer_of(tower)
    assert [layer_of(f"features.{k}.0.weight") for k in (0, 1, 3, 4, 6)] == [1, 2, 3, 4, 5]


def test_hugging_face_style_names():
    class Encoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embeddings = nn.Embedding(10, 4)
            self.encoder = nn.Module()
            self.encoder.layer = nn.ModuleList(nn.Linear(4, 4) for _ in range(3))
            self.pooler = nn.Linear(4, 4)

    layer_of = default_layer_of(Encoder())
    assert [layer_of(n) for n in ("embeddings.weight", "encoder.layer.0.weight", "encoder.layer.2.bias",
                                  "pooler.weight")] == [0, 1, 3, 4]


def test_custom_layer_of_num_layers_and_frozen_parameters():
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2), nn.Linear(2, 2))
    model[0].requires_grad_(False)
    groups = layer_decay_groups(model, 2.0, 0.1, 0.5, layer_of=lambda name: int(name[0]), num_layers=4)
    got = lr_and_decay_of(groups)
    assert id(model[0].weight) not in got
    assert got[id(model[1].weight)] == (2.0 * 0.5 ** 3, 0.5 ** 3, 0.1)
    assert got[id(model[2].bias)] == (2.0 * 0.5 ** 2, 0.5 ** 2, 0.0)
    with pytest.raises(ValueError, match="num_layers"):
        layer_decay_groups(model, 2.0, 0.1, 0.5, layer_of=lambda name: int(name[0]), num_layers=1)
    with pytest.raises(ValueError, match="decay"):
        layer_decay_groups(model, 2.0, 0.1, 1.5)


def test_groups_feed_any_optimizer_and_keep_their_lrs():
    tower = create_image_tower("vit-tiny", in_channels=1, image_size=28)
    groups = layer_decay_groups(tower, base_lr=1e-3, weight_decay=0.05, decay=0.8)
    for name in ("adamw", "lion", "lamb", "adamw8bit", "lion8bit"):
        optimizer = create_optimizer(name, groups, lr=5.0, betas=(0.9, 0.98), eps=1e-6)
        assert [g["lr"] for g in optimizer.param_groups] == [g["lr"] for g in groups]
        # How a trainer applies its schedule: the scheduled lr times each group's scale.
        for group in optimizer.param_groups:
            group["lr"] = 0.5 * group["lr_scale"]
        assert max(g["lr"] for g in optimizer.param_groups) == 0.5
    assert sum(p.numel() for g in groups for p in g["params"]) == sum(p.numel() for p in tower.parameters())
    assert torch.is_tensor(groups[0]["params"][0])
