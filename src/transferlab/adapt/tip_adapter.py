"""Tip-Adapter and Tip-Adapter-F: a key-value cache of the few-shot examples added to the zero-shot classifier
(Zhang et al., "Tip-Adapter: Training-free adaption of CLIP for few-shot classification", ECCV 2022).

The cache keys are the few-shot features F [N, D], normalised, and its values their one-hot labels L [N, K].
A sample x (normalised) scores

    A(x) = exp(−β · (1 − x · Fᵀ))                       affinity to every key, in (e^{−2β}, 1]
    logits(x) = τ · x · W_zsᵀ + α · A(x) · L             τ = `zeroshot_scale`, CLIP's logit scale 100

with W_zs [K, D] the zero-shot class weights (row c is class c; the labels are the class indices 0..K-1).
β sharpens the affinity, α weighs the cache against zero-shot. Defaults α = 1, β = 5.5, the values the paper's
ablation on 16-shot ImageNet settles on (its released configs start the search from α = 1.17, β = 1 instead).
Given (`val_x`, `val_y`), α and β are chosen by validation accuracy over the grids `alphas` × `betas`, by
default β ∈ {0.1, 0.2, …, 7.0} and α ∈ {0.1, 0.2, …, 3.0} — the paper's ImageNet search range in steps of
0.1 — extended by 12 log-spaced values from 4 to 300. The paper's α ≤ 3 presumes CLIP's small zero-shot
logit gaps (a few units at scale 100); a model that is sure of its zero-shot answer (the default recipe's
has a median top-1/top-2 gap of ~19 on digits) would never let the cache change a prediction, and
Tip-Adapter would equal zero-shot at every shot count (measured: 0.827 → 0.868 at 16 shots with the
paper's grid, 0.953 with the extended one). Ties go to the smaller β, then the smaller α (the first best in
the paper's loop order).

`TipAdapterF` makes the keys a parameter, initialised from F, and trains it with AdamW (lr 1e-3, eps 1e-4,
weight decay 0.01, a cosine schedule to 0 over all steps; batches of 256 for `epochs` = 20, as the paper)
on the cross-entropy of the logits above, at the initial α and β, over the few-shot set itself; the values L
and W_zs stay fixed. Then α and β are searched as for `TipAdapter`, with the trained keys (not renormalised,
as in the paper). Batches are shuffled by a torch.Generator seeded with `seed` (a few-shot set within one
batch is not shuffled at all), so a fit does not touch the global RNG and repeats exactly.

Deviations from the paper: features are fixed, so the cache holds one feature per shot instead of the mean of
10 augmented views, and training sees each shot as it is; the paper's Tip-Adapter-F keeps the epoch with the
best *test* accuracy, this one keeps the last.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.base import BaseEstimator, ClassifierMixin

from transferlab.adapt.inputs import as_float64, check_features, check_zeroshot_weights, softmax, validation_set
from transferlab.models.encoder import ZEROSHOT_LOGIT_SCALE

# the paper's 0.1 … 3.0, then 12 log-spaced values from 4 to 300 (see the module docstring)
DEFAULT_ALPHAS = tuple(round(0.1 * i, 1) for i in range(1, 31)) + tuple(
    float(round(a, 1)) for a in np.geomspace(4, 300, 12))
DEFAULT_BETAS = tuple(round(0.1 * i, 1) for i in range(1, 71))


def normalise(features: np.ndarray) -> np.ndarray:
    return features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)


class TipAdapter(ClassifierMixin, BaseEstimator):
    """Training-free Tip-Adapter; `zeroshot_weights` [K, D] is required.

    Attributes: `classes_` (0..K-1), `cache_keys_` [N, D], `cache_values_` [N, K] (one-hot), `alpha_`, `beta_`
    (used for scoring), `search_scores_` ([len(betas), len(alphas)] validation accuracies, or None),
    `n_features_in_`.
    """

    def __init__(self, zeroshot_weights=None, zeroshot_scale: float = ZEROSHOT_LOGIT_SCALE, alpha: float = 1.0,
                 beta: float = 5.5, alphas=None, betas=None, val_x=None, val_y=None):
        self.zeroshot_weights = zeroshot_weights
        self.zeroshot_scale = zeroshot_scale
        self.alpha = alpha
        self.beta = beta
        self.alphas = alphas  # searched on (val_x, val_y); None: DEFAULT_ALPHAS
        self.betas = betas  # None: DEFAULT_BETAS
        self.val_x = val_x
        self.val_y = val_y

    def fit(self, X, y) -> TipAdapter:
        name = type(self).__name__
        features = normalise(as_float64(X))
        classes, labels = np.unique(np.asarray(y), return_inverse=True)
        if len(features) != len(labels):
            raise ValueError(f"{name}: X has {len(features)} rows but y has {len(labels)} labels")
        self.zeroshot_weights_ = check_zeroshot_weights(self.zeroshot_weights, classes, features, name)
        self.classes_, self.n_features_in_ = classes, features.shape[1]
        self.cache_values_ = np.eye(len(classes))[labels]
        self.cache_keys_ = self._learn_keys(features, labels)
        self.alpha_, self.beta_, self.search_scores_ = float(self.alpha), float(self.beta), None
        val = validation_set(self.val_x, self.val_y, len(classes), name)
        if val is not None:
            self._search(check_features(self, val[0]), val[1])
        return self

    def _learn_keys(self, features: np.ndarray, labels: np.ndarray) -> np.ndarray:
        return features

    def _search(self, features: np.ndarray, labels: np.ndarray) -> None:
        features = normalise(features)
        alphas = np.asarray(DEFAULT_ALPHAS if self.alphas is None else self.alphas, dtype=np.float64)
        betas = np.asarray(DEFAULT_BETAS if self.betas is None else self.betas, dtype=np.float64)
        zeroshot = self.zeroshot_scale * features @ self.zeroshot_weights_.T
        similarity = features @ self.cache_keys_.T
        scores = np.empty((len(betas), len(alphas)))
        for row, beta in enumerate(betas):
            cache = np.exp(-beta * (1.0 - similarity)) @ self.cache_values_
            predictions = (zeroshot[None] + alphas[:, None, None] * cache[None]).argmax(axis=2)
            scores[row] = (predictions == labels[None]).mean(axis=1)
        # the best accuracy; among ties the smallest β, then the smallest α
        candidates = np.argwhere(scores == scores.max())
        best = min(candidates.tolist(), key=lambda index: (betas[index[0]], alphas[index[1]]))
        self.beta_, self.alpha_ = float(betas[best[0]]), float(alphas[best[1]])
        self.search_scores_ = scores

    def decision_function(self, X) -> np.ndarray:
        """Scores [n, K]: τ · x·W_zsᵀ + α · exp(−β(1 − x·Fᵀ)) · L on normalised x."""
        features = normalise(check_features(self, X))
        affinity = np.exp(-self.beta_ * (1.0 - features @ self.cache_keys_.T))
        return self.zeroshot_scale * features @ self.zeroshot_weights_.T + self.alpha_ * affinity @ self.cache_values_

    def predict_proba(self, X) -> np.ndarray:
        return softmax(self.decision_function(X))

    def predict(self, X) -> np.ndarray:
        return self.classes_[self.decision_function(X).argmax(axis=1)]


class TipAdapterF(TipAdapter):
    """Tip-Adapter with the cache keys fine-tuned on the few-shot set (see the module docstring).

    Attributes as `TipAdapter`, plus `loss_curve_` (the mean training loss of each epoch) and `n_iter_`
    (optimizer steps).
    """

    def __init__(self, zeroshot_weights=None, zeroshot_scale: float = ZEROSHOT_LOGIT_SCALE, alpha: float = 1.0,
                 beta: float = 5.5, alphas=None, betas=None, val_x=None, val_y=None, epochs: int = 20, lr: float = 1e-3,
                 batch_size: int = 256, weight_decay: float = 0.01, seed: int = 0):
        super().__init__(zeroshot_weights, zeroshot_scale, alpha, beta, alphas, betas, val_x, val_y)
        self.epochs = epochs
        self.lr = lr
        self.batch_size = batch_size
        self.weight_decay = weight_decay
        self.seed = seed

    def _learn_keys(self, features: np.ndarray, labels: np.ndarray) -> np.ndarray:
        x = torch.tensor(features, dtype=torch.float32)
        targets = torch.as_tensor(labels)
        values = torch.tensor(self.cache_values_, dtype=torch.float32)
        zeroshot = self.zeroshot_scale * x @ torch.tensor(self.zeroshot_weights_, dtype=torch.float32).T
        keys = torch.nn.Parameter(x.clone())
        batches = math.ceil(len(x) / self.batch_size)
        optimizer = torch.optim.AdamW([keys], lr=self.lr, eps=1e-4, weight_decay=self.weight_decay)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, self.epochs * batches))
        generator = torch.Generator().manual_seed(self.seed)
        self.loss_curve_ = []
        for _ in range(self.epochs):
            order = torch.randperm(len(x), generator=generator) if batches > 1 else torch.arange(len(x))
            losses = []
            for batch in order.split(self.batch_size):
                affinity = torch.exp(-self.beta * (1.0 - x[batch] @ keys.T))
                logits = zeroshot[batch] + self.alpha * affinity @ values
                loss = F.cross_entropy(logits, targets[batch])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                schedule.step()
                losses.append(loss.item() * len(batch))
            self.loss_curve_.append(sum(losses) / len(x))
        self.n_iter_ = self.epochs * batches
        return keys.detach().double().numpy()
