"""Top-k accuracy and mean per-class recall against scikit-learn."""

from __future__ import annotations

import pytest
import torch
from sklearn.metrics import balanced_accuracy_score, top_k_accuracy_score

from transferlab.evaluate.metrics import mean_per_class_recall, topk_accuracy


@pytest.mark.parametrize("k", [1, 5])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_topk_accuracy_matches_sklearn(k, seed):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(300, 10, generator=generator)
    labels = torch.randint(0, 10, (300,), generator=generator)
    logits[:100, :] += 2 * torch.nn.functional.one_hot(labels[:100], 10)  # make it better than chance
    expected = top_k_accuracy_score(labels.numpy(), logits.numpy(), k=k, labels=list(range(10)))
    assert topk_accuracy(logits, labels, k) == pytest.approx(expected, abs=1e-6)


def test_topk_with_k_above_class_count_is_one():
    logits, labels = torch.randn(20, 3), torch.randint(0, 3, (20,))
    assert topk_accuracy(logits, labels, 5) == 1.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mean_per_class_recall_matches_balanced_accuracy(seed):
    generator = torch.Generator().manual_seed(seed)
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate([5, 40, 12, 90])])
    predictions = torch.where(torch.rand(len(labels), generator=generator) < 0.6, labels,
                              torch.randint(0, 4, (len(labels),), generator=generator))
    expected = balanced_accuracy_score(labels.numpy(), predictions.numpy())
    assert mean_per_class_recall(predictions, labels) == pytest.approx(expected, abs=1e-6)
    assert mean_per_class_recall(predictions, labels) != pytest.approx((predictions == labels).float().mean().item())
