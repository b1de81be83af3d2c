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
