"""Weight-decay parameter groups, the optimizer factory and the learning-rate schedules."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from transferlab.config import TrainSpec
from transferlab.errors import UserError
from transferlab.optim import LAMB, AdamW8bit, Lion, Lion8bit, build_optimizer, create_optimizer, lr_at
from transferlab.optim.factory import parameter_groups


class Small(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.proj = nn.Linear(4, 8)
        self.ln = nn.LayerNorm(8)
        self.frozen = nn.Linear(8, 8)
        self.frozen.requires_grad_(False)
        self.logit_scale = nn.Parameter(torch.tensor(2.0))


def ids(params) -> set[int]:
    return {id(p) for p in params}


def test_matrices_are_decayed_and_vectors_scalars_are_not():
    model = Small()
    decay, no_decay = parameter_groups(model, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert ids(decay["params"]) == ids([model.conv.weight, model.proj.weight])
    assert ids(no_decay["params"]) == ids([model.conv.bias, model.bn.weight, model.bn.bias, model.proj.bias,
                                           model.ln.weight, model.ln.bias, model.logit_scale])


def test_frozen_parameters_are_left_out():
    model = Small()
    grouped = ids(p for group in parameter_groups(model, 0.1) for p in group["params"])
    assert grouped.isdisjoint(ids(model.frozen.parameters()))
    assert grouped == ids(p for p in model.parameters() if p.requires_grad)


def test_build_optimizer_is_adamw_with_recipe_settings():
    spec = TrainSpec(lr=0.01, weight_decay=0.2, betas=(0.8, 0.9), eps=1e-5)
    optimizer = build_optimizer(Small(), spec)
    assert isinstance(optimizer, torch.optim.AdamW)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.2, 0.0]
    assert all(g["lr"] == 0.01 and g["betas"] == (0.8, 0.9) and g["eps"] == 1e-5 for g in optimizer.param_groups)


def test_warmup_rises_linearly_to_base_lr():
    lrs = [lr_at(step, 0.5, 100, 10, "cosine") for step in range(10)]
    assert lrs == pytest.approx([0.5 * (step + 1) / 10 for step in range(10)])
    assert lrs[9] == pytest.approx(0.5)


def test_cosine_is_half_at_midpoint_and_zero_at_end():
    assert lr_at(10, 0.5, 110, 10, "cosine") == pytest.approx(0.5)
    assert lr_at(60, 0.5, 110, 10, "cosine") == pytest.approx(0.25)
    assert lr_at(35, 0.5, 110, 10, "cosine") == pytest.approx(0.25 * (1 + math.cos(math.pi / 4)))
    assert lr_at(110, 0.5, 110, 10, "cosine") == pytest.approx(0.0, abs=1e-12)
    assert lr_at(150, 0.5, 110, 10, "cosine") == pytest.approx(0.0, abs=1e-12)


def test_constant_stays_at_base_lr_after_warmup():
    assert [lr_at(step, 0.3, 50, 5, "constant") for step in (5, 20, 49, 80)] == [0.3] * 4


def test_no_warmup_starts_at_base_lr():
    assert lr_at(0, 0.3, 50, 0, "cosine") == pytest.approx(0.3)


def test_unknown_schedule_raises():
    with pytest.raises(ValueError, match="unknown schedule"):
        lr_at(20, 0.1, 100, 10, "linear")


@pytest.mark.parametrize(("name", "kind"), [("adamw", torch.optim.AdamW), ("lion", Lion), ("lamb", LAMB),
                                            ("adamw8bit", AdamW8bit), ("lion8bit", Lion8bit)])
def test_create_optimizer_by_name(name, kind):
    optimizer = create_optimizer(name, parameter_groups(Small(), 0.2), lr=0.01, betas=(0.8, 0.9), eps=1e-5)
    assert type(optimizer) is kind
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.2, 0.0]
    assert all(g["lr"] == 0.01 and tuple(g["betas"]) == (0.8, 0.9) for g in optimizer.param_groups)
    assert all(g.get("eps", 1e-5) == 1e-5 for g in optimizer.param_groups)  # Lion has no eps


def test_unknown_optimizer_is_a_user_error_listing_the_choices():
    with pytest.raises(UserError, match="adamw, lion, lamb, adamw8bit, lion8bit.*Did you mean 'lion8bit'"):
        create_optimizer("lion-8bit", parameter_groups(Small(), 0.1), lr=0.01, betas=(0.9, 0.99), eps=1e-8)


def test_build_optimizer_follows_the_recipe_optimizer():
    assert type(build_optimizer(Small(), TrainSpec(optimizer="lion8bit"))) is Lion8bit


def test_adamw_takes_torchs_fused_kernel_with_the_for_loop_update():
    torch.manual_seed(0)
    fused_model = nn.Sequential(nn.Linear(8, 16), nn.LayerNorm(16), nn.Tanh(), nn.Linear(16, 4))
    loop_model = nn.Sequential(nn.Linear(8, 16), nn.LayerNorm(16), nn.Tanh(), nn.Linear(16, 4))
    loop_model.load_state_dict(fused_model.state_dict())
    fused = create_optimizer("adamw", parameter_groups(fused_model, 0.1), lr=0.01, betas=(0.9, 0.98), eps=1e-6)
    reference = torch.optim.AdamW(parameter_groups(loop_model, 0.1), lr=0.01, betas=(0.9, 0.98), eps=1e-6,
                                  foreach=False)
    assert fused.defaults["fused"] and not reference.defaults["fused"]
    for _ in range(20):
        inputs = torch.randn(16, 8)
        for model, optimizer in ((fused_model, fused), (loop_model, reference)):
            optimizer.zero_grad()
            model(inputs).square().mean().backward()
            optimizer.step()
    for ours, theirs in zip(fused_model.parameters(), loop_model.parameters(), strict=True):
        assert torch.allclose(ours, theirs, atol=1e-6, rtol=1e-5)
