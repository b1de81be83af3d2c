"""Seeded, stratified train/val/test splits: disjoint, complete, proportional, reproducible."""

from __future__ import annotations

import pytest
import torch

from transferlab.config import Splits
from transferlab.data.splits import split_indices

CLASS_SIZES = [10, 23, 7, 50, 3]
GROUPED = torch.cat([torch.full((n,), c) for c, n in enumerate(CLASS_SIZES)])
LABELS = GROUPED[torch.randperm(len(GROUPED), generator=torch.Generator().manual_seed(1))]
SPLITS = Splits(train=0.6, val=0.2, test=0.2, seed=3)


@pytest.mark.parametrize("labels", [LABELS, None], ids=["labelled", "unlabelled"])
def test_splits_are_disjoint_sorted_and_cover_every_index(labels):
    parts = split_indices(len(LABELS), SPLITS, labels)
    assert set(parts) == {"train", "val", "test"}
    everything = torch.cat(list(parts.values())).tolist()
    assert sorted(everything) == list(range(len(LABELS)))
    for index in parts.values():
        assert torch.equal(index, index.sort().values)


def test_split_sizes_per_class_follow_fractions():
    parts = split_indices(len(LABELS), SPLITS, LABELS)
    for c, n in enumerate(CLASS_SIZES):
        for name, fraction in (("train", SPLITS.train), ("val", SPLITS.val), ("test", SPLITS.test)):
            count = int((LABELS[parts[name]] == c).sum())
            assert abs(count - n * fraction) <= 1, (c, name, count)


def test_every_class_is_in_every_split():
    parts = split_indices(len(LABELS), SPLITS, LABELS)
    for index in parts.values():
        assert set(LABELS[index].tolist()) == set(range(len(CLASS_SIZES)))


def test_unlabelled_split_sizes_follow_fractions():
    parts = split_indices(200, Splits(train=0.7, val=0.1, test=0.2, seed=0))
    assert [len(parts[name]) for name in ("train", "val", "test")] == [140, 20, 40]


def test_same_seed_gives_same_indices():
    first, second = split_indices(93, SPLITS, LABELS), split_indices(93, SPLITS, LABELS)
    assert all(torch.equal(first[name], second[name]) for name in first)


def test_different_seed_gives_different_indices():
    first = split_indices(93, SPLITS, LABELS)
    other = split_indices(93, SPLITS.model_copy(update={"seed": 4}), LABELS)
    assert not torch.equal(first["test"], other["test"])


def test_all_for_testing_leaves_no_sample_for_training():
    # {test: 1} means every sample is evaluated on: fractions not given are 0, and no class keeps a training sample
    everything = Splits.model_validate({"test": 1})
    assert (everything.train, everything.val, everything.test) == (0, 0, 1)
    parts = split_indices(len(LABELS), everything, LABELS)
    assert len(parts["train"]) == len(parts["val"]) == 0 and len(parts["test"]) == len(LABELS)
    held = split_indices(len(LABELS), Splits.model_validate({"val": 0.5, "test": 0.5}), LABELS)
    assert len(held["train"]) == 0 and len(held["val"]) + len(held["test"]) == len(LABELS)


def test_fractions_that_do_not_sum_to_one_are_refused():
    with pytest.raises(ValueError, match="sum to 1"):
        Splits.model_validate({"train": 0.5, "test": 0.2})
