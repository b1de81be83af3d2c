"""Classification metrics on logits or predictions; accuracies are fractions in [0, 1]."""

from __future__ import annotations

import torch


def topk_accuracy(logits: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    """Fraction of samples whose true class is among the k highest logits."""
    k = min(k, logits.shape[1])
    return (logits.topk(k, dim=1).indices == labels[:, None]).any(dim=1).float().mean().item()


def mean_per_class_recall(predictions: torch.Tensor, labels: torch.Tensor) -> float:
    """Recall averaged over the classes present in `labels` (balanced accuracy)."""
    classes = torch.unique(labels)
    return torch.stack([(predictions[labels == c] == c).float().mean() for c in classes]).mean().item()
