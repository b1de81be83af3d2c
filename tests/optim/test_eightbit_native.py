"""The 8-bit optimizers' fused CPU step (optim/_native.c) against their torch twin, and one AdamW8bit step against
a brute-force float64 reference written from the formulas (nearest code by argmin, no lookup tables)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from transferlab.optim import AdamW8bit, Lion8bit, eightbit
from transferlab.optim.quantize import BLOCK, dequantize_blockwise, dynamic_code

if eightbit._native is None:
    pytest.skip("the C extension is not built here, or TRANSFERLAB_PURE_PYTHON=1 turns it off", allow_module_level=True)

MAKERS = {"adamw": lambda p, sr: AdamW8bit(p, lr=1e-3, weight_decay=0.1, stochastic_rounding=sr),
          "lion": lambda p, sr: Lion8bit(p, lr=1e-4, weight_decay=0.1, stochastic_rounding=sr)}


def parameters(seed: int) -> list[nn.Parameter]:
    """A matrix split among threads, one whose last block is short, one too small for 8-bit states."""
    g = torch.Generator().manual_seed(seed)
    return [nn.Parameter(torch.randn(size, generator=g) * 0.02) for size in ((600, 300), (4097,), (10,))]


def warmed(name: str, stochastic: bool, monkeypatch) -> tuple[torch.optim.Optimizer, list[nn.Parameter]]:
    """An optimizer after 5 steps (gradients of two scales), its state no longer trivial."""
    monkeypatch.setattr(eightbit, "CHUNK_BLOCKS", 100)  # (600, 300) = 704 blocks: 8 chunks for 2 threads
    params = parameters(0)
    optimizer = MAKERS[name](params, stochastic)
    g = torch.Generator().manual_seed(1)
    for step in range(5):
        for p in params:
            p.grad = torch.randn(p.shape, generator=g) * (1e-3 if step % 2 else 1e-1)
        optimizer.step()
    return optimizer, params


def clone(optimizer: torch.optim.Optimizer, params: list[nn.Parameter], name: str, stochastic: bool):
    twins = [nn.Parameter(p.detach().clone()) for p in params]
    for p, q in zip(params, twins, strict=True):
        q.grad = p.grad.clone()
    other = MAKERS[name](twins, stochastic)
    other.load_state_dict(copy.deepcopy(optimizer.state_dict()))
    return other, twins


@pytest.mark.parametrize("stochastic", [True, False], ids=["stochastic", "nearest"])
@pytest.mark.parametrize("name", MAKERS)
def test_one_fused_step_is_the_twins_step(name, stochastic, monkeypatch):
    torch.set_num_threads(2)  # the fused step splits the large matrix between two threads
    optimizer, params = warmed(name, stochastic, monkeypatch)
    twin_optimizer, twins = clone(optimizer, params, name, stochastic)
    optimizer.step()
    monkeypatch.setattr(eightbit, "_native", None)
    twin_optimizer.step()
    code = {True: dynamic_code(True), False: dynamic_code(False)}
    for p, q in zip(params, twins, strict=True):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)  # float rounding: torch's lerp uses an FMA
        fused, twin = optimizer.state[p], twin_optimizer.state[q]
        assert fused.keys() == twin.keys()
        for key in [k for k in fused if k.endswith("_codes")]:
            moment = key.removesuffix("_codes")
            torch.testing.assert_close(fused[f"{moment}_absmax"], twin[f"{moment}_absmax"], rtol=1e-6, atol=0)
            differ = fused[key] != twin[key]
            assert differ.float().mean() < 1e-3  # a value within rounding of a boundary may go either way
            signed = moment == "exp_avg"
            values = [dequantize_blockwise(s[key], s[f"{moment}_absmax"], code[signed], p.shape)
                      for s in (fused, twin)]
            spacing = 2 * 0.9 / 64 * fused[f"{moment}_absmax"].max()  # the widest gap between codes, scaled
            assert (values[0] - values[1]).abs().max() <= spacing


def brute_force_adamw8bit_step(param, grad, state, lr, betas, eps, weight_decay):
    """One AdamW8bit step in float64 numpy from the formulas: decode the moments, update, pick each block's
    nearest code value by argmin (the √v moment with the unsigned code). Returns (param, {moment: codes})."""
    beta1, beta2 = betas
    t = state["step"].item()
    n = param.numel()
    code = {"exp_avg": dynamic_code(True).double().numpy(), "grad_rms": dynamic_code(False).double().numpy()}

    def decode(moment):
        values = code[moment][state[f"{moment}_codes"].numpy().astype(np.int64)]
        return values * np.repeat(state[f"{moment}_absmax"].double().numpy(), BLOCK)[:n]

    def encode(moment, x):
        padded = np.zeros(-(-n // BLOCK) * BLOCK)
        padded[:n] = x
        blocks = padded.reshape(-1, BLOCK)
        absmax = np.abs(blocks).max(axis=1, keepdims=True)
        scaled = blocks / np.where(absmax > 0, absmax, 1)
        return np.abs(scaled[..., None] - code[moment]).argmin(axis=-1).reshape(-1)[:n], scaled.reshape(-1)[:n]

    g = grad.double().numpy().reshape(-1)
    m = beta1 * decode("exp_avg") + (1 - beta1) * g
    rms = np.sqrt(beta2 * decode("grad_rms") ** 2 + (1 - beta2) * g * g)
    p = param.detach().double().numpy().reshape(-1) * (1 - lr * weight_decay)
    p -= lr / (1 - beta1 ** (t + 1)) * m / (rms / np.sqrt(1 - beta2 ** (t + 1)) + eps)
    return p, {"exp_avg": encode("exp_avg", m), "grad_rms": encode("grad_rms", rms)}


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "twin"])
def test_adamw8bit_step_matches_a_float64_brute_force_reference(fused, monkeypatch):
    if not fused:
        monkeypatch.setattr(eightbit, "_native", None)
    param = nn.Parameter(torch.randn(5000, generator=torch.Generator().manual_seed(0)))
    optimizer = AdamW8bit([param], lr=1e-2, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.1, stochastic_rounding=False)
    g = torch.Generator().manual_seed(1)
    for _ in range(4):
        param.grad = torch.randn(param.shape, generator=g) * torch.logspace(-4, 0, 5000)  # tiny to large
        optimizer.step()
    state = {k: v.clone() for k, v in optimizer.state[param].items()}
    expected, codes = brute_force_adamw8bit_step(param, param.grad, state, 1e-2, (0.9, 0.98), 1e-6, 0.1)
    optimizer.step()
    np.testing.assert_allclose(param.detach().double().numpy(), expected, rtol=1e-5, atol=1e-7)
    for moment, (want, scaled) in codes.items():
        got = optimizer.state[param][f"{moment}_codes"].numpy()
        mismatched = np.flatnonzero(got != want)
        assert len(mismatched) <= 3  # only values on a midpoint, within float32 rounding of it:
        code = dynamic_code(moment == "exp_avg").double().numpy()
        midpoint = (code[got[mismatched]] + code[want[mismatched]]) / 2
        assert np.all(np.abs(scaled[mismatched] - midpoint) < 1e-6)
