"""Nearest class mean classification on frozen features (Mensink et al., 2013).

Features are normalised, x̂ = x/‖x‖, and each class c of the training set gets its mean μ_c = mean_{y_j = c} x̂_j.
With metric="cosine" the means are normalised again and x is assigned argmax_c x̂·μ_c/‖μ_c‖, the prototype
classifier of few-shot learning; with metric="euclidean" it is assigned argmin_c ‖x̂ - μ_c‖², which also weighs
how concentrated each class is (‖μ_c‖ shrinks as a class spreads over the sphere) and is scikit-learn's
`NearestCentroid` on normalised features. At equal scores the class that sorts first in `classes_` wins.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted


class NearestClassMean(ClassifierMixin, BaseEstimator):
    """Assign each sample to the nearest class mean; `centroids_` [K, d] stay on the features' device."""

    def __init__(self, metric: str = "cosine"):
        self.metric = metric

    def fit(self, X, y) -> NearestClassMean:
        if self.metric not in ("cosine", "euclidean"):
            raise ValueError(f"metric must be 'cosine' or 'euclidean', got {self.metric!r}")
        features = torch.as_tensor(X)
        features = F.normalize(features if features.is_floating_point() else features.float(), dim=1)
        self.classes_, labels = np.unique(np.asarray(y), return_inverse=True)
        labels = torch.as_tensor(labels, device=features.device)
        sums = torch.zeros(len(self.classes_), features.shape[1], dtype=features.dtype, device=features.device)
        means = sums.index_add_(0, labels, features) / torch.bincount(labels, minlength=len(self.classes_))[:, None]
        self.centroids_ = F.normalize(means, dim=1) if self.metric == "cosine" else means
        return self

    def decision_function(self, X) -> np.ndarray:
        """Scores [n, K]: cosine similarity to each normalised mean, or minus the squared euclidean distance."""
        check_is_fitted(self)
        features = F.normalize(torch.as_tensor(X).to(self.centroids_), dim=1)
        if self.metric == "cosine":
            return (features @ self.centroids_.T).cpu().numpy()
        return (-torch.cdist(features, self.centroids_).square()).cpu().numpy()

    def predict(self, X) -> np.ndarray:
        return self.classes_[self.decision_function(X).argmax(axis=1)]
