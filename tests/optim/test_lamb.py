"""LAMB against the paper's update written out in float64, and on a quadratic."""

from __future__ import annotations

import math

import pytest
import torch

from transferlab.optim import LAMB


def reference_lamb(theta, grads, lr, beta1, beta2, eps, weight_decay, adapt=True):
    """You et al. 2020, Algorithm 2 (with bias correction), for one parameter tensor as a list."""
    theta, n = list(theta), len(theta)
    m, v = [0.0] * n, [0.0] * n
    for t, g in enumerate(grads, start=1):
        m = [beta1 * m[i] + (1 - beta1) * g[i] for i in range(n)]
        v = [beta2 * v[i] + (1 - beta2) * g[i] ** 2 for i in range(n)]
        r = [(m[i] / (1 - beta1 ** t)) / (math.sqrt(v[i] / (1 - beta2 ** t)) + eps) + weight_decay * theta[i]
             for i in range(n)]
        theta_norm, r_norm = math.sqrt(sum(x * x for x in theta)), math.sqrt(sum(x * x for x in r))
        ratio = theta_norm / r_norm if adapt and theta_norm > 0 and r_norm > 0 else 1.0
        theta = [theta[i] - lr * ratio * r[i] for i in range(n)]
    return theta


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
@pytest.mark.parametrize("always_adapt", [False, True])
def test_lamb_matches_the_paper_step_by_step(weight_decay, always_adapt):
    g = torch.Generator().manual_seed(0)
    start = torch.randn(2, 5, dtype=torch.float64, generator=g)
    grads = [torch.randn(2, 5, dtype=torch.float64, generator=g) * (1 + k) for k in range(5)]
    param = torch.nn.Parameter(start.clone())
    optimizer = LAMB([param], lr=0.1, betas=(0.9, 0.99), eps=1e-6, weight_decay=weight_decay,
                     always_adapt=always_adapt)
    for step, grad in enumerate(grads, start=1):
        param.grad = grad.clone()
        optimizer.step()
        adapt = weight_decay != 0 or always_adapt
        expected = reference_lamb(start.flatten().tolist(), [x.flatten().tolist() for x in grads[:step]],
                                  0.1, 0.9, 0.99, 1e-6, weight_decay, adapt)
        assert param.detach().flatten().tolist() == pytest.approx(expected, rel=1e-12, abs=1e-14)


def test_trust_ratio_makes_the_step_proportional_to_the_weight_norm():
    for scale in (0.01, 100.0):
        param = torch.nn.Parameter(torch.full((4,), scale, dtype=torch.float64))
        param.grad = torch.tensor([1.0, -2.0, 3.0, 0.5], dtype=torch.float64)
        before = param.detach().clone()
        LAMB([param], lr=0.01, weight_decay=1e-3).step()
        assert (param.detach() - before).norm().item() == pytest.approx(0.01 * before.norm().item(), rel=1e-9)


def test_zero_weights_take_an_unscaled_step():
    param = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
    param.grad = torch.tensor([1.0, -1.0, 2.0], dtype=torch.float64)
    LAMB([param], lr=0.1, eps=0.0, weight_decay=0.1).step()
    assert param.detach().tolist() == pytest.approx([-0.1, 0.1, -0.1])  # ratio 1, Adam's first step is sign


def test_lamb_minimises_a_quadratic():
    target = torch.linspace(1, 3, 8)
    param = torch.nn.Parameter(torch.ones(8))
    optimizer = LAMB([param], lr=0.05, always_adapt=True)
    for step in range(300):
        optimizer.param_groups[0]["lr"] = 0.05 * (1 - step / 300)
        optimizer.zero_grad()
        ((param - target) ** 2).sum().backward()
        optimizer.step()
    assert torch.allclose(param.detach(), target, atol=0.02)
