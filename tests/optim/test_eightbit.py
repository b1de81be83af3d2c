"""AdamW8bit and Lion8bit: state layout and size, agreement with the 32-bit optimizers, checkpoints."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from transferlab.optim import AdamW8bit, Lion, Lion8bit
from transferlab.optim.quantize import dequantize_blockwise, dynamic_code, quantize_blockwise
from transferlab.train.train_state import optimizer_state, restore_optimizer


def mlp(seed: int = 0, dtype: torch.dtype = torch.float32) -> nn.Module:
    """32 → 256 → 1: the first weight (8192 values) gets 8-bit states, everything else 32-bit."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(32, 256), nn.ReLU(), nn.Linear(256, 1)).to(dtype)


def data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2048, 32, generator=g)
    y = torch.sin(x @ (torch.randn(32, 8, generator=g) / 32 ** 0.5)).sum(1, keepdim=True)
    return x, y + 0.1 * torch.randn(y.shape, generator=g)


def train(model: nn.Module, optimizer: torch.optim.Optimizer, steps: int, seed: int = 0) -> torch.Tensor:
    """Mini-batch losses of `steps` steps; the batches depend only on `seed`."""
    x, y = data()
    g = torch.Generator().manual_seed(seed + 1)
    dtype = next(model.parameters()).dtype
    losses = []
    for _ in range(steps):
        index = torch.randint(0, len(x), (128,), generator=g)
        loss = nn.functional.mse_loss(model(x[index].to(dtype)).float(), y[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return torch.tensor(losses)


def max_relative_gap(reference: torch.Tensor, other: torch.Tensor) -> float:
    return ((reference - other).abs() / reference).max().item()


PAIRS = {"adamw": (lambda p: torch.optim.AdamW(p, lr=1e-3), lambda p: AdamW8bit(p, lr=1e-3)),
         "lion": (lambda p: Lion(p, lr=2e-4, weight_decay=0.1), lambda p: Lion8bit(p, lr=2e-4, weight_decay=0.1))}


@pytest.mark.parametrize("name", PAIRS)
def test_loss_curve_tracks_the_32bit_optimizer(name):
    make_32bit, make_8bit = PAIRS[name]
    model_32, model_8 = mlp(), mlp()
    reference, losses = train(model_32, make_32bit(model_32.parameters()), 200), train(model_8, make_8bit(
        model_8.parameters()), 200)
    assert losses[-20:].mean() < 0.35 * losses[:5].mean()  # it really trains
    assert max_relative_gap(reference, losses) < 0.02  # measured: 0.4% (AdamW), 0.3% (Lion)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("make", [AdamW8bit, Lion8bit])
def test_large_tensors_get_8bit_states_and_small_ones_float32(make, dtype):
    model = mlp(dtype=dtype)
    optimizer = make(model.parameters(), lr=1e-3)
    train(model, optimizer, 2)
    large, *small = model[0].weight, model[0].bias, model[2].weight, model[2].bias
    state = optimizer.state[large]
    assert state["exp_avg_codes"].dtype == torch.uint8 and state["exp_avg_codes"].numel() == large.numel()
    assert state["exp_avg_absmax"].dtype == torch.float32 and state["exp_avg_absmax"].numel() == 8192 // 256
    assert ("grad_rms_codes" in state) == (make is AdamW8bit)
    for param in small:
        moments = {k: v for k, v in optimizer.state[param].items() if k != "step"}
        assert set(moments) == ({"exp_avg", "exp_avg_sq"} if make is AdamW8bit else {"exp_avg"})
        assert all(v.dtype == torch.float32 and v.shape == param.shape for v in moments.values())
    assert all(p.dtype == dtype for p in model.parameters())
    assert all(isinstance(v, torch.Tensor) for s in optimizer.state.values() for v in s.values())


def state_bytes(optimizer: torch.optim.Optimizer, param: torch.Tensor) -> int:
    return sum(v.numel() * v.element_size() for v in optimizer.state[param].values())


def test_state_bytes_per_parameter_of_large_tensors():
    big = nn.Parameter(torch.randn(512, 512))
    for make, bound in ((AdamW8bit, 2.1), (Lion8bit, 1.1)):
        optimizer = make([big])
        big.grad = torch.randn_like(big)
        optimizer.step()
        assert state_bytes(optimizer, big) / big.numel() <= bound
    adamw = torch.optim.AdamW([big])
    adamw.step()
    assert state_bytes(adamw, big) / big.numel() >= 8


@pytest.mark.parametrize("pair", ["adamw", "lion"])
def test_32bit_path_is_the_32bit_optimizer(pair):
    """With every tensor below min_8bit_size, the 8-bit optimizers are AdamW and Lion."""
    make_8bit = {"adamw": lambda p: AdamW8bit(p, lr=1e-2, weight_decay=0.1, min_8bit_size=10 ** 9),
                 "lion": lambda p: Lion8bit(p, lr=1e-3, weight_decay=0.1, min_8bit_size=10 ** 9)}[pair]
    make_32bit = {"adamw": lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.1),
                  "lion": lambda p: Lion(p, lr=1e-3, weight_decay=0.1)}[pair]
    model, reference = mlp(), mlp()
    train(model, make_8bit(model.parameters()), 10)
    train(reference, make_32bit(reference.parameters()), 10)
    for p, q in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)


def test_stochastic_rounding_keeps_a_requantised_ema_on_course():
    """Why the optimizers round stochastically: a slowly drifting EMA (β = 0.99) re-quantised every step
    sticks to its old code values with round-to-nearest, because each step's change is below the spacing."""
    g = torch.Generator().manual_seed(0)
    code = dynamic_code(signed=True)
    start, end = torch.randn(4096, generator=g), torch.randn(4096, generator=g)
    exact = torch.zeros(4096)
    stored = {"nearest": quantize_blockwise(exact, code), "stochastic": quantize_blockwise(exact, code)}
    for step in range(300):
        grad = torch.lerp(start, end, step / 300) + 0.3 * torch.randn(4096, generator=g)
        exact.lerp_(grad, 0.01)
        for mode, (codes, absmax) in stored.items():
            value = dequantize_blockwise(codes, absmax, code, exact.shape).lerp_(grad, 0.01)
            rng = torch.Generator().manual_seed(step) if mode == "stochastic" else None
            stored[mode] = quantize_blockwise(value, code, rng)
    error = {mode: ((dequantize_blockwise(*s, code, exact.shape) - exact).norm() / exact.norm()).item()
             for mode, s in stored.items()}
    assert error["stochastic"] < 0.1 and error["nearest"] > 4 * error["stochastic"]  # measured 0.08, 0.46


def test_stochastic_rounding_is_unbiased():
    code = dynamic_code(signed=True)
    x = torch.tensor([1.0, 0.5 + 1e-3, -0.0031, 0.0, 2e-7] + [0.0] * 251)
    draws = torch.stack([dequantize_blockwise(*quantize_blockwise(x, code, torch.Generator().manual_seed(s)),
                                              code, x.shape) for s in range(2000)])
    torch.testing.assert_close(draws.mean(0)[:5], x[:5], rtol=0.05, atol=1e-8)
    assert torch.all(draws[:, 3] == 0) and torch.all(draws[:, 0] == 1)  # exact code values never move


def test_tiny_gradients_next_to_huge_ones_take_adam_sized_steps():
    """√v is stored, not v: a gradient 1e-4 of its block's largest keeps a non-zero denominator. Storing
    v would round it to 0 and the step would be m / ε, thousands of times too large."""
    param = nn.Parameter(torch.zeros(4096))
    grad = torch.full((4096,), 1e-4)
    grad[::256] = 1.0  # one huge gradient per block
    optimizer = AdamW8bit([param], lr=1e-3, weight_decay=0.0, eps=1e-8)
    for _ in range(20):
        before = param.detach().clone()
        param.grad = grad.clone()
        optimizer.step()
        steps = (before - param.detach()).abs()
        assert steps.max() < 1.5e-3 and steps.min() > 0.5e-3  # Adam's |step| is about lr for a steady sign


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("make", [AdamW8bit, Lion8bit])
def test_checkpoint_round_trip_is_bit_identical(make, dtype, tmp_path):
    model = mlp(dtype=dtype)
    optimizer = make(model.parameters(), lr=1e-3, weight_decay=0.01)
    train(model, optimizer, 5, seed=0)
    tensors, groups = optimizer_state(optimizer)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp_path / "optimizer.safetensors"))
    groups = json.loads(json.dumps(groups))  # as the checkpoint's meta.json stores them

    resumed_model = copy.deepcopy(model)
    resumed = make(resumed_model.parameters(), lr=1e-3, weight_decay=0.01)
    restore_optimizer(resumed, load_file(str(tmp_path / "optimizer.safetensors")), groups)
    for saved, loaded in zip(optimizer.state.values(), resumed.state.values(), strict=True):
        assert {k: v.dtype for k, v in saved.items()} == {k: v.dtype for k, v in loaded.items()}

    train(model, optimizer, 5, seed=1)
    train(resumed_model, resumed, 5, seed=1)
    for p, q in zip(model.parameters(), resumed_model.parameters(), strict=True):
        assert torch.equal(p, q)
    for saved, loaded in zip(optimizer.state.values(), resumed.state.values(), strict=True):
        assert all(torch.equal(saved[k], loaded[k]) for k in saved)


def test_bfloat16_parameters_train():
    for make in (lambda p: AdamW8bit(p, lr=1e-3), lambda p: Lion8bit(p, lr=1e-3, weight_decay=0.1)):
        model = mlp(dtype=torch.bfloat16)
        losses = train(model, make(model.parameters()), 100)
        assert losses[-10:].mean() < 0.4 * losses[:5].mean()
