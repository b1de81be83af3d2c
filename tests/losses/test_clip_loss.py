"""clip_loss against open_clip's ClipLoss and a brute-force float64 multi-positive reference."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from transferlab.losses import ClipLoss, clip_loss


def embeddings(n: int, d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    image = F.normalize(torch.randn(n, d, generator=generator, dtype=torch.float64), dim=-1)
    text = F.normalize(torch.randn(n, d, generator=generator, dtype=torch.float64), dim=-1)
    return image, text


def brute_force(image: np.ndarray, text: np.ndarray, scale: float, ids: np.ndarray) -> float:
    """Average of the two directions' cross-entropies against uniform targets over equal ids, by loops."""
    n = len(image)
    logits = scale * image @ text.T
    total = 0.0
    for matrix in (logits, logits.T):
        for i in range(n):
            row = matrix[i]
            log_softmax = row - (row.max() + math.log(np.exp(row - row.max()).sum()))
            matches = [j for j in range(n) if ids[i] == ids[j]]
            total += -sum(log_softmax[j] for j in matches) / len(matches) / n
    return total / 2


def test_matches_open_clip_clip_loss():
    open_clip_loss = pytest.importorskip("open_clip.loss")
    image, text = embeddings(16, 8, seed=0)
    scale = torch.tensor(14.3, dtype=torch.float64)
    expected = open_clip_loss.ClipLoss()(image, text, scale)
    assert torch.allclose(clip_loss(image, text, scale), expected, atol=1e-12)
    assert torch.allclose(ClipLoss()(image, text, scale), expected, atol=1e-12)


def test_multi_positive_matches_brute_force():
    image, text = embeddings(12, 6, seed=1)
    ids = torch.tensor([0, 1, 0, 2, 1, 1, 3, 0, 2, 4, 4, 4])
    loss = clip_loss(image, text, 10.0, positive_ids=ids)
    assert loss.item() == pytest.approx(brute_force(image.numpy(), text.numpy(), 10.0, ids.numpy()), abs=1e-10)


def test_distinct_ids_reduce_to_the_standard_loss():
    image, text = embeddings(10, 4, seed=2)
    assert torch.allclose(clip_loss(image, text, 5.0, positive_ids=torch.arange(10)), clip_loss(image, text, 5.0),
                          atol=1e-12)


def test_multi_positive_is_at_its_floor_for_perfect_class_prototypes():
    """Images and captions of a class all at the class prototype: the one-positive loss still pushes
    same-class pairs apart (its value stays near ln(class size)), the multi-positive one is at its floor,
    the entropy of its targets, and its gradient vanishes."""
    prototypes = torch.eye(3, dtype=torch.float64)
    ids = torch.tensor([0, 0, 1, 1, 2, 2])
    image = prototypes[ids].clone().requires_grad_(True)
    loss = clip_loss(image, prototypes[ids], 60.0, positive_ids=ids)
    loss.backward()
    assert loss.item() == pytest.approx(math.log(2), abs=1e-6)
    assert image.grad.abs().max() < 1e-6
    # the one-positive loss cannot tell the two members of a class apart: same value, but 0 is its floor
    assert clip_loss(prototypes[ids], prototypes[ids], 60.0).item() == pytest.approx(math.log(2), abs=1e-6)


def test_logit_bias_shifts_every_logit_and_leaves_softmax_losses_unchanged():
    image, text = embeddings(8, 4, seed=3)
    assert torch.allclose(clip_loss(image, text, 3.0, logit_bias=-10.0), clip_loss(image, text, 3.0), atol=1e-12)


def test_gradient_matches_finite_differences():
    image, text = embeddings(6, 3, seed=4)
    image.requires_grad_(True)
    ids = torch.tensor([0, 0, 1, 2, 2, 2])
    assert torch.autograd.gradcheck(lambda x: clip_loss(x, text, 4.0, positive_ids=ids), (image,))


def smoothed_brute_force(image: np.ndarray, text: np.ndarray, scale: float, ids: np.ndarray | None,
                         epsilon: float) -> float:
    """Cross-entropy of each row and column against (1 − ε)·t + ε/n, t one-hot or uniform over equal ids."""
    n = len(image)
    ids = np.arange(n) if ids is None else ids
    logits = scale * image @ text.T
    total = 0.0
    for matrix in (logits, logits.T):
        for i in range(n):
            row = matrix[i]
            log_normaliser = math.log(sum(math.exp(value) for value in row))
            matches = sum(1 for j in range(n) if ids[i] == ids[j])
            for j in range(n):
                target = (1 - epsilon) * (ids[i] == ids[j]) / matches + epsilon / n
                total -= target * (row[j] - log_normaliser) / n
    return total / 2


@pytest.mark.parametrize("with_ids", [False, True])
@pytest.mark.parametrize("epsilon", [0.1, 0.5, 1.0])
def test_label_smoothing_matches_brute_force(with_ids, epsilon):
    image, text = embeddings(9, 5, seed=5)
    ids = torch.tensor([0, 1, 0, 2, 1, 1, 3, 0, 2]) if with_ids else None
    loss = clip_loss(image, text, 7.0, positive_ids=ids, label_smoothing=epsilon)
    expected = smoothed_brute_force(image.numpy(), text.numpy(), 7.0, None if ids is None else ids.numpy(), epsilon)
    assert loss.item() == pytest.approx(expected, abs=1e-10)
    assert ClipLoss(label_smoothing=epsilon)(image, text, 7.0, ids).item() == pytest.approx(expected, abs=1e-10)


def test_label_smoothing_zero_is_bit_identical_to_the_unsmoothed_loss():
    image, text = embeddings(8, 4, seed=6)
    ids = torch.tensor([0, 0, 1, 1, 2, 3, 3, 3])
    assert torch.equal(clip_loss(image, text, 9.0, label_smoothing=0.0), clip_loss(image, text, 9.0))
    assert torch.equal(clip_loss(image, text, 9.0, positive_ids=ids, label_smoothing=0.0),
                       clip_loss(image, text, 9.0, positive_ids=ids))
    assert not torch.equal(clip_loss(image, text, 9.0, label_smoothing=0.2), clip_loss(image, text, 9.0))


@pytest.mark.parametrize("epsilon", [-0.1, 1.5, float("nan")])
def test_label_smoothing_outside_unit_interval_is_refused(epsilon):
    image, text = embeddings(4, 3, seed=7)
    with pytest.raises(ValueError, match="label_smoothing"):
        clip_loss(image, text, 1.0, label_smoothing=epsilon)
    with pytest.raises(ValueError, match="label_smoothing"):
        ClipLoss(label_smoothing=epsilon)


def test_loss_and_gradients_match_open_clip_including_the_scale():
    open_clip_loss = pytest.importorskip("open_clip.loss")
    image, text = embeddings(12, 6, seed=8)
    scale = torch.tensor(11.0, dtype=torch.float64)
    inputs = [tensor.clone().requires_grad_(True) for tensor in (image, text, scale)]
    reference = [tensor.clone().requires_grad_(True) for tensor in (image, text, scale)]
    ours = clip_loss(*inputs)
    theirs = open_clip_loss.ClipLoss()(*reference)
    assert abs(ours.item() - theirs.item()) < 1e-9
    for ours_grad, theirs_grad in zip(torch.autograd.grad(ours, inputs), torch.autograd.grad(theirs, reference),
                                      strict=True):
        assert torch.allclose(ours_grad, theirs_grad, rtol=0, atol=1e-9)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_low_precision_tracks_float64_and_stays_differentiable(dtype):
    image, text = embeddings(16, 8, seed=9)
    ids = torch.arange(16) % 5
    expected = clip_loss(image, text, 10.0, positive_ids=ids, label_smoothing=0.1).item()
    low = image.to(dtype).requires_grad_(True)
    loss = clip_loss(low, text.to(dtype), torch.tensor(10.0, dtype=dtype), positive_ids=ids, label_smoothing=0.1)
    loss.backward()
    assert loss.dtype == dtype
    assert loss.item() == pytest.approx(expected, rel=0.05 if dtype == torch.bfloat16 else 1e-5)
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
        loss = clip_loss(F.normalize(tower(points), dim=-1), F.normalize(prototypes[labels], dim=-1), 10.0,
                         positive_ids=labels, label_smoothing=0.1)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]
