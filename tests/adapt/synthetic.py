"""Synthetic CLIP-like features for the adaptation tests: unit vectors around class directions."""

import numpy as np


def normalise(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def zeroshot_accuracy(weights, x, y):
    """Accuracy of argmax_c x·w_c, the zero-shot classifier."""
    return float(((x @ weights.T).argmax(1) == y).mean())


def clip_like(classes=10, d=32, shots=16, test_per_class=100, noise=3.0, text_noise=3.0, seed=0):
    """Unit-norm features around class directions, and zero-shot weights that are noisy copies of them."""
    rng = np.random.default_rng(seed)
    centers = normalise(rng.normal(size=(classes, d)))

    def draw(per_class):
        y = np.repeat(np.arange(classes), per_class)
        return normalise(centers[y] + noise * rng.normal(size=(len(y), d)) / np.sqrt(d)), y

    weights = normalise(centers + text_noise * rng.normal(size=(classes, d)) / np.sqrt(d))
    return weights, draw(shots), draw(shots), draw(test_per_class)
