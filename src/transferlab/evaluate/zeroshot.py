"""Zero-shot classification with a prompt-template ensemble (Radford et al., 2021, section 3.1.4).

Each class c gets the weight w_c = normalise(mean_t normalise(f(template_t(c)))) from the text encoder f
(models/encoder.py: zeroshot_weights); an image with normalised embedding x is assigned argmax_c x·w_c. No
labelled example is used.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin

from transferlab.evaluate.metrics import mean_per_class_recall, topk_accuracy


def zeroshot_classify(embeddings: torch.Tensor, weights: torch.Tensor,
                      labels: torch.Tensor) -> tuple[dict, torch.Tensor]:
    """Metrics (acc1, acc5, mean_per_class_recall) and predictions of images [N, D] against weights [K, D]."""
    logits = embeddings @ weights.T
    predictions = logits.argmax(dim=1)
    metrics = {"acc1": topk_accuracy(logits, labels, 1), "acc5": topk_accuracy(logits, labels, 5),
               "mean_per_class_recall": mean_per_class_recall(predictions, labels)}
    return metrics, predictions


class ZeroShotClassifier(ClassifierMixin, BaseEstimator):
    """The zero-shot classifier as an estimator: `fit` learns nothing (it only records the classes), so it is
    the reference line of few-shot curves. Labels index the rows of `weights` [K, D]."""

    def __init__(self, weights=None) -> None:
        self.weights = weights

    def fit(self, X, y) -> ZeroShotClassifier:
        self.classes_ = np.arange(len(self.weights))
        return self

    def decision_function(self, X) -> np.ndarray:
        return np.asarray(X, dtype=np.float64) @ np.asarray(self.weights, dtype=np.float64).T

    def predict(self, X) -> np.ndarray:
        return self.classes_[self.decision_function(X).argmax(axis=1)]
