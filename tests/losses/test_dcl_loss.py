"""dcl_loss against a brute-force float64 loop of the decoupled InfoNCE formula."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from transferlab.losses import DCLLoss, clip_loss, dcl_loss


def embeddings(n: int, d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    image = F.normalize(torch.randn(n, d, generator=generator, dtype=torch.float64), dim=-1)
    text = F.normalize(torch.randn(n, d, generator=generator, dtype=torch.float64), dim=-1)
    return image, text


def brute_force(image: np.ndarray, text: np.ndarray, scale: float, ids: np.ndarray) -> float:
    """½ Σ_directions mean_i [ −mean_{p: id_p = id_i} z_ip + log Σ_{j: id_j ≠ id_i} exp z_ij ], by loops,
    skipping anchors with no negative."""
    n = len(image)
    directions = []
    for queries, keys in ((image, text), (text, image)):
        terms = []
        for i in range(n):
            logits = [scale * float(queries[i] @ keys[j]) for j in range(n)]
            positives = [logits[j] for j in range(n) if ids[j] == ids[i]]
            negatives = [logits[j] for j in range(n) if ids[j] != ids[i]]
            if negatives:
                terms.append(-sum(positives) / len(positives) + math.log(sum(math.exp(z) for z in negatives)))
        directions.append(sum(terms) / len(terms) if terms else 0.0)
    return sum(directions) / 2


def test_single_positive_matches_brute_force():
    image, text = embeddings(11, 5, seed=0)
    expected = brute_force(image.numpy(), text.numpy(), 8.0, np.arange(11))
    assert dcl_loss(image, text, 8.0).item() == pytest.approx(expected, abs=1e-10)
    assert DCLLoss()(image, text, torch.tensor(8.0, dtype=torch.float64)).item() == pytest.approx(expected, abs=1e-10)


def test_multi_positive_matches_brute_force():
    image, text = embeddings(12, 6, seed=1)
    ids = torch.tensor([0, 1, 0, 2, 1, 1, 3, 0, 2, 4, 4, 4])
    expected = brute_force(image.numpy(), text.numpy(), 5.0, ids.numpy())
    assert dcl_loss(image, text, 5.0, positive_ids=ids).item() == pytest.approx(expected, abs=1e-10)
    assert DCLLoss()(image, text, 5.0, ids).item() == pytest.approx(expected, abs=1e-10)


def test_removing_the_positive_from_the_denominator_lowers_the_loss_below_infonce():
    """Per anchor, DCL = InfoNCE − log(1 + exp(z_ii) / Σ_{j≠i} exp z_ij), so the gap is the batch mean of that."""
    image, text = embeddings(10, 4, seed=2)
    logits = 6.0 * image @ text.T
    gap = 0.0
    for matrix in (logits, logits.T):
        off_diagonal = matrix.masked_fill(torch.eye(10, dtype=torch.bool), float("-inf"))
        gap += torch.log1p(matrix.diagonal().exp() / off_diagonal.exp().sum(dim=1)).mean().item() / 2
    assert clip_loss(image, text, 6.0).item() - dcl_loss(image, text, 6.0).item() == pytest.approx(gap, abs=1e-10)


def test_a_batch_of_one_class_has_no_negatives_and_gives_zero_without_nan_gradients():
    image, text = embeddings(5, 3, seed=3)
    image.requires_grad_(True)
    loss = dcl_loss(image, text, 5.0, positive_ids=torch.zeros(5, dtype=torch.long))
    loss.backward()
    assert loss.item() == 0.0
    assert torch.equal(image.grad, torch.zeros_like(image))


def test_gradient_matches_finite_differences():
    image, text = embeddings(6, 3, seed=5)
    ids = torch.tensor([0, 0, 1, 2, 2, 2])
    scale = torch.tensor(4.0, dtype=torch.float64, requires_grad=True)
    image.requires_grad_(True)
    text.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x, y, s: dcl_loss(x, y, s, positive_ids=ids), (image, text, scale))
    assert torch.autograd.gradcheck(lambda x, y, s: dcl_loss(x, y, s), (image, text, scale))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_low_precision_tracks_float64_and_stays_differentiable(dtype):
    image, text = embeddings(16, 8, seed=6)
    ids = torch.arange(16) % 5
    expected = dcl_loss(image, text, 10.0, positive_ids=ids).item()
    low = image.to(dtype).requires_grad_(True)
    loss = dcl_loss(low, text.to(dtype), torch.tensor(10.0, dtype=dtype), positive_ids=ids)
    loss.backward()
    assert loss.dtype == dtype
    assert loss.item() == pytest.approx(expected, abs=0.1 if dtype == torch.bfloat16 else 1e-4)
    assert torch.isfinite(low.grad).all()


def test_loss_falls_when_training_a_linear_image_tower():
    torch.manual_seed(0)  # the tower's initialisation, independent of the tests run before
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(64) % 4
    points = 0.5 * torch.randn(4, 16, generator=generator)[labels] + torch.randn(64, 16, generator=generator)
    tower = torch.nn.Linear(16, 8)
    prototypes = torch.nn.Parameter(torch.randn(4, 8, generator=generator))
    optimizer = torch.optim.Adam([*tower.parameters(), prototypes], lr=0.05)
    losses = []
    for _ in range(100):
        loss = dcl_loss(F.normalize(tower(points), dim=-1), F.normalize(prototypes[labels], dim=-1), 10.0,
                        positive_ids=labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[0] > 0  # DCL can go negative, so "falls by 30%" needs a positive start to mean anything
    assert losses[-1] < 0.7 * losses[0]
