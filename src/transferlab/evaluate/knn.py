"""Weighted k-nearest-neighbour classification on frozen features (Wu et al., 2018; Caron et al., 2021).

A query x and training features x_j are compared by s_j = x̂·x̂_j with x̂ = x/‖x‖ (metric="cosine", so raw
features work too; metric="dot" uses x·x_j as given). The k most similar training features N_k(x) vote:

    score_c(x) = Σ_{j ∈ N_k(x), y_j = c} exp(s_j / T),        p(c | x) = score_c(x) / Σ_c' score_c'(x)

the similarity-weighted vote of Wu et al. (2018) used by DINO's kNN evaluation (k=20, T=0.07);
weights="uniform" gives each neighbour weight 1 (a majority vote). The weights are computed as exp((s_j - s_1)/T),
which leaves p unchanged and cannot overflow at small T. A k larger than the training set is clipped to it.

Both backends are exact: "torch" runs chunked matmuls and top-k on the features' device, "faiss" an IndexFlatIP
on the CPU; "auto" takes faiss when it is installed and the features are on the CPU. Ties are broken the same way
by both: at equal similarity the lower training index is the nearer neighbour (faiss's heaps keep the earlier
index, and torch's top-k runs on keys that encode the index), and at equal class score the class that sorts first
in `classes_` wins. The backends can still differ where two similarities differ only by float rounding.

`knn_sweep` searches once for the largest k: in that neighbour order the k nearest are a prefix of the k_max
nearest, so every k is scored from one search. `select_k_on_validation` picks k on a validation split and refits
on train + val, as `probe_with_validation` does for the linear probe's penalty.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted

_LOW = 0xFFFFFFFF


def _order_bits(bits: torch.Tensor) -> torch.Tensor:
    """Float32 bit patterns (int32) ↔ integers of the same order: a negative float's magnitude bits are flipped.

    The map is its own inverse; it works in place on `bits`.
    """
    return bits.bitwise_xor_((bits >> 31) & 0x7FFFFFFF)


def _keys(similarities: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """Distinct int64 keys whose descending order is (similarity descending, index ascending).

    The high 32 bits order like the float32 similarity, the low 32 bits are the complement of the index, so an
    integer top-k is exact and deterministic where a float top-k may return either of two equal values.
    """
    bits = _order_bits((similarities.float() + 0.0).view(torch.int32))  # + 0.0 turns -0.0 into +0.0, its equal
    keys = bits.long()
    keys <<= 32
    keys |= _LOW - indices
    return keys


def _decode(keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return _order_bits((keys >> 32).int()).view(torch.float32), _LOW - (keys & _LOW)


def _torch_search(queries: torch.Tensor, train: torch.Tensor, k: int, batch_size: int) -> torch.Tensor:
    """Keys of the k nearest training rows of every query, in blocks of batch_size queries × batch_size rows."""
    found = []
    for start in range(0, len(queries), batch_size):
        block = queries[start:start + batch_size]
        best = None
        for first in range(0, len(train), batch_size):
            rows = train[first:first + batch_size]
            keys = _keys(block @ rows.T, torch.arange(first, first + len(rows), device=train.device))
            keys = keys.topk(min(k, len(rows)), dim=1).values
            best = keys if best is None else torch.cat([best, keys], dim=1)
            best = best.topk(min(k, best.shape[1]), dim=1).values
        found.append(best)
    return torch.cat(found)


def _faiss_search(queries: torch.Tensor, train: torch.Tensor, k: int) -> torch.Tensor:
    import faiss

    index = faiss.IndexFlatIP(train.shape[1])
    index.add(train.cpu().numpy())
    similarities, indices = index.search(np.ascontiguousarray(queries.cpu().numpy()), k)
    # faiss returns the right set but orders equal similarities arbitrarily; the keys restore the documented order
    keys = _keys(torch.from_numpy(similarities), torch.from_numpy(indices))
    return keys.sort(dim=1, descending=True).values.to(train.device)


class KNNClassifier(ClassifierMixin, BaseEstimator):
    """Similarity-weighted kNN vote; a scikit-learn classifier (see the module docstring)."""

    def __init__(self, k: int = 20, temperature: float = 0.07, metric: str = "cosine", weights: str = "exp",
                 backend: str = "auto", batch_size: int = 4096):
        self.k = k
        self.temperature = temperature
        self.metric = metric
        self.weights = weights
        self.backend = backend
        self.batch_size = batch_size  # torch backend: a block of batch_size² pairs takes ~16·batch_size² bytes

    def fit(self, X, y) -> KNNClassifier:
        if self.metric not in ("cosine", "dot") or self.weights not in ("exp", "uniform"):
            raise ValueError(f"metric must be 'cosine' or 'dot' and weights 'exp' or 'uniform', "
                             f"got metric={self.metric!r}, weights={self.weights!r}")
        if self.k < 1 or self.temperature <= 0:
            raise ValueError(f"k must be >= 1 and temperature > 0, got k={self.k}, temperature={self.temperature}")
        self.classes_, labels = np.unique(np.asarray(y), return_inverse=True)
        self.train_features_ = self._prepare(torch.as_tensor(X))
        self.train_labels_ = torch.as_tensor(labels, device=self.train_features_.device)
        self.backend_ = self._resolve_backend()
        return self

    def kneighbors(self, X, k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Similarities and training indices [n, k] of the nearest neighbours, nearest first."""
        similarities, indices = self._search(X, k or self.k)
        return similarities.cpu().numpy(), indices.cpu().numpy()

    def predict_proba(self, X) -> np.ndarray:
        scores = self._class_scores(*self._search(X, self.k), self.k)
        return scores / scores.sum(axis=1, keepdims=True)

    def predict(self, X) -> np.ndarray:
        return self.classes_[self._class_scores(*self._search(X, self.k), self.k).argmax(axis=1)]

    def _prepare(self, features: torch.Tensor) -> torch.Tensor:
        features = features.float()
        return F.normalize(features, dim=1) if self.metric == "cosine" else features.contiguous()

    def _resolve_backend(self) -> str:
        has_faiss = importlib.util.find_spec("faiss") is not None
        if self.backend == "auto":
            return "faiss" if has_faiss and self.train_features_.device.type == "cpu" else "torch"
        if self.backend == "faiss" and not has_faiss:
            raise ImportError("backend='faiss' needs the faiss package (pip install faiss-cpu); "
                              "backend='torch' is exact too.")
        if self.backend not in ("faiss", "torch"):
            raise ValueError(f"backend must be 'auto', 'faiss' or 'torch', got {self.backend!r}")
        return self.backend

    def _search(self, X, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        check_is_fitted(self)
        train = self.train_features_
        queries = self._prepare(torch.as_tensor(X, device=train.device))
        k = min(k, len(train))
        keys = _faiss_search(queries, train, k) if self.backend_ == "faiss" else \
            _torch_search(queries, train, k, self.batch_size)
        return _decode(keys)

    def _class_scores(self, similarities: torch.Tensor, indices: torch.Tensor, k: int) -> np.ndarray:
        """score_c [n, n_classes] from the first k of the neighbours found (float64)."""
        similarities, indices = similarities[:, :k].double(), indices[:, :k]
        weights = torch.ones_like(similarities) if self.weights == "uniform" else \
            torch.exp((similarities - similarities[:, :1]) / self.temperature)
        scores = torch.zeros(len(indices), len(self.classes_), dtype=torch.float64, device=indices.device)
        return scores.scatter_add_(1, self.train_labels_[indices], weights).cpu().numpy()


def knn_sweep(train_x, train_y, test_x, test_y, ks: Sequence[int] = (1, 5, 10, 20, 50, 100),
              **params) -> dict[int, float]:
    """Test accuracy {k: acc} for every k, from one neighbour search; params go to `KNNClassifier`."""
    model = KNNClassifier(k=max(ks), **params).fit(train_x, train_y)
    similarities, indices = model._search(test_x, max(ks))
    labels = np.asarray(test_y)
    return {k: float((model.classes_[model._class_scores(similarities, indices, k).argmax(axis=1)] == labels).mean())
            for k in ks}


def select_k_on_validation(train_x, train_y, val_x, val_y, ks: Sequence[int] = (1, 5, 10, 20, 50, 100),
                           **params) -> tuple[KNNClassifier, dict[int, float]]:
    """The classifier refit on train + val with the k that scored best on val, and every k's val accuracy."""
    scores = knn_sweep(train_x, train_y, val_x, val_y, ks, **params)
    best = max(scores, key=lambda k: (scores[k], k))  # ties go to the larger k, the smoother vote
    train_x = torch.as_tensor(train_x)
    features = torch.cat([train_x, torch.as_tensor(val_x, device=train_x.device)])
    labels = np.concatenate([np.asarray(train_y), np.asarray(val_y)])
    return KNNClassifier(k=best, **params).fit(features, labels), scores
