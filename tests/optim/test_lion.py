"""Lion against the paper's update written out in float64, and on a quadratic."""

from __future__ import annotations

import pytest
import torch

from transferlab.optim import Lion


def reference_lion(theta, grads, lr, beta1, beta2, weight_decay):
    """Chen et al. 2023, Algorithm 2, one coordinate list at a time."""
    theta, m = list(theta), [0.0] * len(theta)
    for g in grads:
        for i, gi in enumerate(g):
            c = beta1 * m[i] + (1 - beta1) * gi
            sign = (c > 0) - (c < 0)
            theta[i] = theta[i] - lr * (sign + weight_decay * theta[i])
            m[i] = beta2 * m[i] + (1 - beta2) * gi
    return theta, m


@pytest.mark.parametrize("weight_decay", [0.0, 0.3])
def test_lion_matches_the_paper_step_by_step(weight_decay):
    g = torch.Generator().manual_seed(0)
    start = torch.randn(7, dtype=torch.float64, generator=g)
    # Gradients that change sign, so the momentum and the sign of c matter.
    grads = [torch.randn(7, dtype=torch.float64, generator=g) for _ in range(6)]
    param = torch.nn.Parameter(start.clone())
    optimizer = Lion([param], lr=0.05, betas=(0.8, 0.95), weight_decay=weight_decay)
    for step, grad in enumerate(grads, start=1):
        param.grad = grad.clone()
        optimizer.step()
        theta, m = reference_lion(start.tolist(), [x.tolist() for x in grads[:step]], 0.05, 0.8, 0.95, weight_decay)
        assert param.detach().tolist() == pytest.approx(theta, abs=1e-14)
        assert optimizer.state[param]["exp_avg"].tolist() == pytest.approx(m, abs=1e-14)


def test_lion_defaults_follow_the_paper():
    group = Lion([torch.nn.Parameter(torch.zeros(1))]).param_groups[0]
    assert group["betas"] == (0.9, 0.99) and group["weight_decay"] == 0.0


def test_lion_minimises_a_quadratic():
    target = torch.linspace(-2, 2, 10)
    param = torch.nn.Parameter(torch.zeros(10))
    optimizer = Lion([param], lr=0.02)
    for step in range(600):
        # Lion's steps have a fixed size and its slow momentum overshoots: decay the lr to settle.
        optimizer.param_groups[0]["lr"] = 0.02 * (1 - step / 600)
        optimizer.zero_grad()
        ((param - target) ** 2).sum().backward()
        optimizer.step()
    assert torch.allclose(param.detach(), target, atol=1e-3)


def test_lion_skips_parameters_without_gradients():
    used, unused = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(3))
    optimizer = Lion([used, unused], lr=0.1, weight_decay=0.5)
    used.grad = torch.ones(3)
    optimizer.step()
    assert torch.equal(unused.detach(), torch.ones(3)) and unused not in optimizer.state
    assert torch.allclose(used.detach(), torch.full((3,), 1 - 0.1 * (1 + 0.5)))
