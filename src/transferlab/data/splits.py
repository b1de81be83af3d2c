"""Seeded train/val/test splits, stratified by class when labels exist; and the names publishers give a
validation split (`VAL_NAMES`), for the readers that keep a publisher's splits.

Every class is split in the same proportions (rounded per class, at least one training sample each when
`train` > 0), so every split keeps every class represented; the same seed always gives the same indices.
"""

from __future__ import annotations

import torch

from transferlab.config import Splits

VAL_NAMES = ("val", "validation", "valid")  # a published validation split, by the names publishers give it


def split_indices(n: int, splits: Splits, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """{'train': idx, 'val': idx, 'test': idx}, disjoint, covering range(n), each sorted."""
    generator = torch.Generator().manual_seed(splits.seed)
    groups = [torch.arange(n)] if labels is None else [torch.nonzero(labels == c).flatten()
                                                        for c in torch.unique(labels)]
    parts: dict[str, list[torch.Tensor]] = {"train": [], "val": [], "test": []}
    for group in groups:
        group = group[torch.randperm(len(group), generator=generator)]
        n_val = round(len(group) * splits.val)
        n_test = round(len(group) * splits.test)
        keep = 1 if splits.train > 0 else 0  # a training sample per class, unless nothing is for training
        n_val = min(n_val, len(group) - keep)
        n_test = min(n_test, max(len(group) - keep - n_val, 0)) if keep else len(group) - n_val
        parts["val"].append(group[:n_val])
        parts["test"].append(group[n_val:n_val + n_test])
        parts["train"].append(group[n_val + n_test:])
    return {name: torch.sort(torch.cat(chunks)).values for name, chunks in parts.items()}
