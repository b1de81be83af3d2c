"""supcon_loss and ntxent_loss against brute-force float64 loops of the SupCon (L_out) and SimCLR formulas."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from transferlab.losses import NTXentLoss, SupConLoss, ntxent_loss, supcon_loss


def normalised(n: int, d: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, d, generator=generator, dtype=torch.float64), dim=-1)


def supcon_brute_force(z: np.ndarray, ids: np.ndarray, tau: float) -> float:
    """Mean over anchors with a positive of −mean_p log(exp(z_i·z_p/τ) / Σ_{a≠i} exp(z_i·z_a/τ)), by loops."""
    n = len(z)
    terms = []
    for i in range(n):
        positives = [p for p in range(n) if p != i and ids[p] == ids[i]]
        if not positives:
            continue
        log_denominator = math.log(sum(math.exp(float(z[i] @ z[a]) / tau) for a in range(n) if a != i))
        terms.append(-sum(float(z[i] @ z[p]) / tau - log_denominator for p in positives) / len(positives))
    return sum(terms) / len(terms) if terms else 0.0


def simclr_brute_force(a: np.ndarray, b: np.ndarray, tau: float) -> float:
    """SimCLR's ℓ(i, j) averaged over the 2B anchors, written from the paper: views k and k + B are a pair."""
    z = np.concatenate([a, b])
    n = len(z)
    total = 0.0
    for i in range(n):
        j = (i + n // 2) % n
        denominator = sum(math.exp(float(z[i] @ z[k]) / tau) for k in range(n) if k != i)
        total += -math.log(math.exp(float(z[i] @ z[j]) / tau) / denominator)
    return total / n


def test_supcon_matches_brute_force_with_a_singleton_anchor_skipped():
    z = normalised(13, 5, seed=0)
    ids = torch.tensor([0, 1, 0, 2, 1, 1, 3, 0, 2, 4, 4, 4, 5])  # 3 and 5 occur once: those anchors are skipped
    expected = supcon_brute_force(z.numpy(), ids.numpy(), 0.2)
    assert supcon_loss(z, ids, 0.2).item() == pytest.approx(expected, abs=1e-10)
    assert SupConLoss(temperature=0.2)(z, ids).item() == pytest.approx(expected, abs=1e-10)


def test_ntxent_matches_the_simclr_formula():
    a, b = normalised(7, 4, seed=1), normalised(7, 4, seed=2)
    expected = simclr_brute_force(a.numpy(), b.numpy(), 0.5)
    assert ntxent_loss(a, b, 0.5).item() == pytest.approx(expected, abs=1e-10)
    assert NTXentLoss(temperature=0.5)(a, b).item() == pytest.approx(expected, abs=1e-10)


def test_ntxent_is_supcon_with_instance_ids_repeated_over_the_views():
    a, b = normalised(6, 4, seed=3), normalised(6, 4, seed=4)
    stacked = torch.cat([a, b])
    ids = torch.arange(6).repeat(2)
    assert torch.allclose(ntxent_loss(a, b, 0.3), supcon_loss(stacked, ids, 0.3), rtol=0, atol=1e-12)
    assert torch.allclose(ntxent_loss(a, b, 0.3), supcon_loss(stacked, torch.arange(6), 0.3, views=2),
                          rtol=0, atol=1e-12)


def test_supcon_with_one_label_per_pair_is_ntxent():
    a, b = normalised(8, 5, seed=5), normalised(8, 5, seed=6)
    labels = torch.tensor([17, 3, 9, 0, 42, 8, 5, 11])  # distinct, arbitrary values
    assert torch.allclose(supcon_loss(torch.cat([a, b]), labels, 0.1, views=2), ntxent_loss(a, b, 0.1),
                          rtol=0, atol=1e-12)


def test_views_stack_view_major():
    a, b, c = normalised(5, 3, seed=7), normalised(5, 3, seed=8), normalised(5, 3, seed=9)
    labels = torch.tensor([0, 1, 0, 2, 1])
    stacked = torch.cat([a, b, c])
    expected = supcon_brute_force(stacked.numpy(), labels.repeat(3).numpy(), 0.1)
    assert supcon_loss(stacked, labels, 0.1, views=3).item() == pytest.approx(expected, abs=1e-10)


@pytest.mark.parametrize(("count", "ids", "views"), [(6, torch.arange(4), 2), (6, torch.arange(5), None),
                                                     (6, torch.arange(3), 0)])
def test_mismatched_ids_are_refused(count, ids, views):
    with pytest.raises(ValueError):
        supcon_loss(normalised(count, 3, seed=10), ids, views=views)


@pytest.mark.parametrize("count", [1, 5])
def test_a_batch_without_positive_pairs_gives_zero_without_nan_gradients(count):
    z = normalised(count, 3, seed=11).requires_grad_(True)
    loss = supcon_loss(z, torch.arange(count))
    loss.backward()
    assert loss.item() == 0.0
    assert torch.equal(z.grad, torch.zeros_like(z))


def test_gradient_matches_finite_differences():
    z = normalised(8, 3, seed=12).requires_grad_(True)
    ids = torch.tensor([0, 0, 1, 2, 2, 2, 3, 1])
    tau = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, t: supcon_loss(x, ids, t), (z, tau))
    a, b = normalised(4, 3, seed=13).requires_grad_(True), normalised(4, 3, seed=14).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x, y: ntxent_loss(x, y, 0.5), (a, b))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_low_precision_tracks_float64_and_stays_differentiable(dtype):
    z = normalised(32, 8, seed=15)
    ids = torch.arange(32) % 6
    expected = supcon_loss(z, ids, 0.1).item()
    low = z.to(dtype).requires_grad_(True)
    loss = supcon_loss(low, ids, 0.1)
    loss.backward()
    assert loss.dtype == dtype
    assert loss.item() == pytest.approx(expected, rel=0.05 if dtype == torch.bfloat16 else 1e-5)
    assert torch.isfinite(low.grad).all()


def linear_training_run(loss_of_features) -> list[float]:
    """100 Adam steps of a linear layer on 64 random points of 4 classes; the loss after every step."""
    torch.manual_seed(0)  # the layer's initialisation, independent of the tests run before
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(64) % 4
    points = 0.5 * torch.randn(4, 16, generator=generator)[labels] + torch.randn(64, 16, generator=generator)
    layer = torch.nn.Linear(16, 8)
    optimizer = torch.optim.Adam(layer.parameters(), lr=0.05)
    losses = []
    for _ in range(100):
        loss = loss_of_features(lambda x: F.normalize(layer(x), dim=-1), points, labels, generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def test_supcon_falls_when_training_a_linear_layer():
    losses = linear_training_run(lambda encode, points, labels, _: supcon_loss(encode(points), labels, 0.1))
    assert losses[-1] < 0.7 * losses[0]


def test_ntxent_falls_when_training_a_linear_layer():
    def two_noisy_views(encode, points, labels, generator):
        return ntxent_loss(encode(points + 0.3 * torch.randn(points.shape, generator=generator)),
                           encode(points + 0.3 * torch.randn(points.shape, generator=generator)), 0.1)

    losses = linear_training_run(two_noisy_views)
    assert losses[-1] < 0.7 * losses[0]
