"""Checkpoints: atomic layout, round trip of weights, optimizer and RNG state, damage detection."""

import json
import random

import numpy as np
import pytest
import torch

from transferlab.checkpoints import latest_checkpoint, read_checkpoint, save_checkpoint
from transferlab.errors import UserError
from transferlab.train.train_state import optimizer_state, restore_optimizer, restore_rng, rng_state


def trained_optimizer() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    for _ in range(3):
        optimizer.zero_grad()
        model(torch.randn(5, 4)).pow(2).sum().backward()
        optimizer.step()
    return model, optimizer


def test_save_writes_the_contract_layout_and_moves_latest(tmp_path):
    model, optimizer = trained_optimizer()
    tensors, groups = optimizer_state(optimizer)
    first = save_checkpoint(tmp_path, 4, model.state_dict(), tensors, {"optimizer_param_groups": groups, "rng": {}})
    assert sorted(p.name for p in first.iterdir()) == ["meta.json", "model.safetensors", "train_state.safetensors"]
    assert latest_checkpoint(tmp_path) == first
    second = save_checkpoint(tmp_path, 8, model.state_dict(), tensors, {"optimizer_param_groups": groups, "rng": {}})
    assert latest_checkpoint(tmp_path) == second
    assert (tmp_path / "checkpoints" / "latest").read_text().strip() == "step_8"
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".")]
    assert json.loads((second / "meta.json").read_text())["step"] == 8


def test_optimizer_state_round_trips_exactly(tmp_path):
    model, optimizer = trained_optimizer()
    tensors, groups = optimizer_state(optimizer)
    path = save_checkpoint(tmp_path, 3, model.state_dict(), tensors, {"optimizer_param_groups": groups, "rng": {}})
    meta, weights, state = read_checkpoint(path)
    fresh_model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
    fresh_model.load_state_dict(weights)
    fresh = torch.optim.AdamW(fresh_model.parameters(), lr=0.1)
    restore_optimizer(fresh, state, meta["optimizer_param_groups"])
    batch = torch.randn(5, 4)
    for m, o in ((model, optimizer), (fresh_model, fresh)):
        o.zero_grad()
        m(batch).pow(2).sum().backward()
        o.step()
    for a, b in zip(model.parameters(), fresh_model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_rng_state_round_trips():
    tensors, saved = rng_state()
    expected = (torch.rand(3), np.random.rand(3), random.random())
    json.dumps(saved)  # the non-tensor part must be JSON
    torch.manual_seed(123), np.random.seed(123), random.seed(123)
    restore_rng(tensors, saved)
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(3), expected[1])
    assert random.random() == expected[2]


def test_a_damaged_file_is_reported_not_loaded(tmp_path):
    model, optimizer = trained_optimizer()
    tensors, groups = optimizer_state(optimizer)
    path = save_checkpoint(tmp_path, 1, model.state_dict(), tensors, {"optimizer_param_groups": groups, "rng": {}})
    data = bytearray((path / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (path / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(UserError, match="model.safetensors.*checksum"):
        read_checkpoint(path)


def test_a_half_written_checkpoint_is_invisible(tmp_path):
    model, optimizer = trained_optimizer()
    tensors, groups = optimizer_state(optimizer)
    done = save_checkpoint(tmp_path, 2, model.state_dict(), tensors, {"optimizer_param_groups": groups, "rng": {}})
    (tmp_path / "checkpoints" / ".tmp-step_4").mkdir()  # what a crash mid-write leaves behind
    (tmp_path / "checkpoints" / ".tmp-step_4" / "model.safetensors").write_bytes(b"partial")
    assert latest_checkpoint(tmp_path) == done
    again = save_checkpoint(tmp_path, 4, model.state_dict(), tensors, {"optimizer_param_groups": groups, "rng": {}})
    assert latest_checkpoint(tmp_path) == again
    read_checkpoint(again)
