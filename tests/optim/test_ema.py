"""ModelEMA against the closed form of the average, buffers, swapping weights in and out, state."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from transferlab.optim import ModelEMA


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 2)
        self.norm = nn.BatchNorm1d(2)
        self.frozen = nn.Linear(2, 2)
        self.frozen.requires_grad_(False)


def set_weight(model: Net, value: float) -> None:
    with torch.no_grad():
        model.linear.weight.fill_(value)


def closed_form(values: list[float], initial: float, decay: float, warmup: bool) -> float:
    """θ̄ after updates with θ = values[n] at update n: ∏ d_n weights of the plain recursion."""
    average = initial
    for n, value in enumerate(values):
        d = min(decay, (1 + n) / (10 + n)) if warmup else decay
        average = d * average + (1 - d) * value
    return average


@pytest.mark.parametrize("warmup", [False, True])
def test_average_matches_the_closed_form(warmup):
    model = Net()
    set_weight(model, 1.0)
    ema = ModelEMA(model, decay=0.9, warmup=warmup)
    values = [2.0, -1.0, 4.0, 0.5, 3.0, 3.0, 3.0, 7.0] * 4
    for value in values:
        set_weight(model, value)
        ema.update(model)
    expected = closed_form(values, 1.0, 0.9, warmup)
    assert ema.shadow["linear.weight"].double().mean().item() == pytest.approx(expected, rel=1e-6)


def test_constant_decay_closed_form_and_warmup_start():
    model = Net()
    set_weight(model, 0.0)
    ema = ModelEMA(model, decay=0.99, warmup=False)
    set_weight(model, 1.0)
    for _ in range(50):
        ema.update(model)
    assert ema.shadow["linear.weight"][0, 0].item() == pytest.approx(1 - 0.99 ** 50, rel=1e-5)
    warm = ModelEMA(model, decay=0.9999)
    assert warm.current_decay() == pytest.approx(0.1)  # first update: (1 + 0) / (10 + 0)
    warm.updates = 20_000
    assert warm.current_decay() == pytest.approx(20_001 / 20_010)
    warm.updates = 100_000  # (1 + n) / (10 + n) passes 0.9999 at n = 89,991
    assert warm.current_decay() == 0.9999


def test_buffers_are_averaged_and_counters_copied_frozen_params_untracked():
    model = Net()
    ema = ModelEMA(model, decay=0.5, warmup=False)
    assert "frozen.weight" not in ema.shadow and "norm.running_mean" in ema.shadow
    with torch.no_grad():
        model.norm.running_mean.fill_(4.0)
        model.norm.num_batches_tracked.fill_(7)
    ema.update(model)
    assert torch.allclose(ema.shadow["norm.running_mean"], torch.full((2,), 2.0))
    assert ema.shadow["norm.num_batches_tracked"].item() == 7


def test_applied_swaps_weights_in_and_restores_them():
    model = Net()
    set_weight(model, 0.0)
    ema = ModelEMA(model, decay=0.5, warmup=False)
    set_weight(model, 2.0)
    ema.update(model)  # average 1.0
    with ema.applied(model) as swapped:
        assert swapped is model and torch.all(model.linear.weight == 1.0)
    assert torch.all(model.linear.weight == 2.0)
    with pytest.raises(RuntimeError), ema.applied(model):
        raise RuntimeError("evaluation failed")
    assert torch.all(model.linear.weight == 2.0)  # restored on errors too
    ema.apply_to(model)
    assert torch.all(model.linear.weight == 1.0)


def test_bfloat16_models_average_in_float32():
    model = Net().to(torch.bfloat16)
    ema = ModelEMA(model, decay=0.9999, warmup=False)
    assert ema.shadow["linear.weight"].dtype == torch.float32
    before = ema.shadow["linear.weight"].clone()
    set_weight(model, 1.0)
    ema.update(model)
    assert not torch.equal(ema.shadow["linear.weight"], before)  # a 1e-4 step that bf16 would lose


def test_state_dict_round_trip(tmp_path):
    from safetensors.torch import load_file, save_file

    model = Net()
    ema = ModelEMA(model, decay=0.9)
    for value in (1.0, 2.0, 3.0):
        set_weight(model, value)
        ema.update(model)
    save_file(ema.state_dict(), str(tmp_path / "ema.safetensors"))
    restored = ModelEMA(Net(), decay=0.9)
    restored.load_state_dict(load_file(str(tmp_path / "ema.safetensors")))
    assert restored.updates == 3
    assert all(torch.equal(restored.shadow[k], v) for k, v in ema.shadow.items())
    with pytest.raises(ValueError, match="missing"):
        restored.load_state_dict({"updates": torch.tensor(1)})
