"""siglip_loss against open_clip's SigLipLoss (value and gradients) and a brute-force multi-positive loop."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from transferlab.losses import SIGLIP_INIT_BIAS, SIGLIP_INIT_SCALE, SigLipLoss, siglip_init, siglip_loss


def embeddings(n: int, d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    image = F.normalize(torch.randn(n, d, generator=generator, dtype=torch.float64), dim=-1)
    text = F.normalize(torch.randn(n, d, generator=generator, dtype=torch.float64), dim=-1)
    return image, text


def brute_force(image: np.ndarray, text: np.ndarray, scale: float, bias: float, ids: np.ndarray) -> float:
    """−(1/n) Σ_ij log σ(ℓ_ij z_ij), ℓ = +1 for equal ids and −1 otherwise, by loops."""
    n = len(image)
    total = 0.0
    for i in range(n):
        for j in range(n):
            label = 1.0 if ids[i] == ids[j] else -1.0
            logit = scale * float(image[i] @ text[j]) + bias
            total += math.log1p(math.exp(-label * logit))  # −log σ(x) = log(1 + e^{−x})
    return total / n


@pytest.mark.parametrize("seed", [0, 1])
def test_loss_and_gradients_match_open_clip(seed):
    open_clip_loss = pytest.importorskip("open_clip.loss")
    image, text = embeddings(14, 6, seed=seed)
    values = (image, text, torch.tensor(7.5, dtype=torch.float64), torch.tensor(-4.0, dtype=torch.float64))
    inputs = [tensor.clone().requires_grad_(True) for tensor in values]
    reference = [tensor.clone().requires_grad_(True) for tensor in values]
    ours = siglip_loss(*inputs)
    theirs = open_clip_loss.SigLipLoss()(*reference)
    assert abs(ours.item() - theirs.item()) < 1e-9
    assert abs(SigLipLoss()(*values).item() - theirs.item()) < 1e-9
    for ours_grad, theirs_grad in zip(torch.autograd.grad(ours, inputs), torch.autograd.grad(theirs, reference),
                                      strict=True):
        assert torch.allclose(ours_grad, theirs_grad, rtol=0, atol=1e-9)


def test_plain_loss_matches_brute_force_and_is_normalised_by_n_not_n_squared():
    image, text = embeddings(10, 4, seed=2)
    expected = brute_force(image.numpy(), text.numpy(), 10.0, -10.0, np.arange(10))
    assert siglip_loss(image, text, 10.0, -10.0).item() == pytest.approx(expected, abs=1e-10)


def test_multi_positive_matches_brute_force():
    image, text = embeddings(12, 5, seed=3)
    ids = torch.tensor([0, 1, 0, 2, 1, 1, 3, 0, 2, 4, 4, 4])
    loss = siglip_loss(image, text, 6.0, -2.0, positive_ids=ids)
    assert loss.item() == pytest.approx(brute_force(image.numpy(), text.numpy(), 6.0, -2.0, ids.numpy()), abs=1e-10)
    assert SigLipLoss()(image, text, 6.0, -2.0, ids).item() == pytest.approx(loss.item(), abs=1e-12)


def test_distinct_ids_reduce_to_the_diagonal_labels():
    image, text = embeddings(9, 4, seed=4)
    assert torch.allclose(siglip_loss(image, text, 5.0, -3.0, positive_ids=torch.arange(9) * 7),
                          siglip_loss(image, text, 5.0, -3.0), rtol=0, atol=1e-12)


def test_gradient_matches_finite_differences():
    image, text = embeddings(6, 3, seed=6)
    ids = torch.tensor([0, 0, 1, 2, 2, 2])
    scale = torch.tensor(4.0, dtype=torch.float64, requires_grad=True)
    bias = torch.tensor(-1.0, dtype=torch.float64, requires_grad=True)
    image.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x, s, b: siglip_loss(x, text, s, b, positive_ids=ids),
                                    (image, scale, bias))


def test_init_gives_the_recipe_scale_and_bias():
    log_scale, bias = siglip_init()
    assert (SIGLIP_INIT_SCALE, SIGLIP_INIT_BIAS) == (10.0, -10.0)
    assert log_scale.exp().item() == pytest.approx(10.0, rel=1e-6)
    assert bias.item() == -10.0
    assert log_scale.requires_grad and bias.requires_grad
    assert siglip_init(init_scale=2.0, init_bias=0.5)[0].exp().item() == pytest.approx(2.0, rel=1e-6)
    with pytest.raises(ValueError):
        siglip_init(init_scale=0.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_low_precision_tracks_float64_and_stays_differentiable(dtype):
    image, text = embeddings(16, 8, seed=7)
    expected = siglip_loss(image, text, 10.0, -10.0).item()
    low = image.to(dtype).requires_grad_(True)
    loss = siglip_loss(low, text.to(dtype), torch.tensor(10.0, dtype=dtype), torch.tensor(-10.0, dtype=dtype))
    loss.backward()
    assert loss.dtype == dtype
    assert loss.item() == pytest.approx(expected, rel=0.05 if dtype == torch.bfloat16 else 1e-5)
    assert torch.isfinite(low.grad).all()


def test_loss_falls_when_training_a_linear_image_tower_with_learnt_scale_and_bias():
    torch.manual_seed(0)  # the tower's initialisation, independent of the tests run before
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(64) % 4
    points = 0.5 * torch.randn(4, 16, generator=generator)[labels] + torch.randn(64, 16, generator=generator)
    tower = torch.nn.Linear(16, 8)
    prototypes = torch.nn.Parameter(torch.randn(4, 8, generator=generator))
    log_scale, bias = siglip_init()
    optimizer = torch.optim.Adam([*tower.parameters(), prototypes, log_scale, bias], lr=0.05)
    losses = []
    for _ in range(100):
        loss = siglip_loss(F.normalize(tower(points), dim=-1), F.normalize(prototypes[labels], dim=-1),
                           log_scale.exp(), bias, positive_ids=labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]
