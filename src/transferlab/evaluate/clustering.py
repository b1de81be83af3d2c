"""k-means on frozen features, and how well its clusters recover the classes (NMI, ARI).

`KMeans` minimises the inertia Σ_i min_c ‖x_i - μ_c‖² with Lloyd's iterations (Lloyd, 1982): assign every point
to its nearest centre, move every centre to the mean of its points, until the centres move by at most
tol · mean_d Var(x_d) in summed squared distance (scikit-learn's tolerance) or max_iter is reached. Centres start
from greedy k-means++ (Arthur & Vassilvitskii, 2007, with scikit-learn's greedy variant): each new centre is the
best, by the inertia it leaves, of 2 + ⌊ln k⌋ candidates drawn with probability ∝ D(x)², the squared distance to
the nearest centre so far. Of n_init restarts the lowest inertia is kept (the first, at equal inertia). A cluster
left empty restarts at the point farthest from its centre. Distances ‖x‖² - 2x·μ + ‖μ‖² are computed in blocks of
batch_size points on the features' device, and the random draws come from a NumPy generator seeded by
random_state, so a seed gives the same clustering on every run (and on any device, up to float rounding).

`cluster_metrics` clusters the normalised features into as many clusters as there are classes (by default), once
per seed, and scores each assignment C against the labels Y with scikit-learn's normalised mutual information
NMI = I(Y; C) / ((H(Y) + H(C)) / 2) and adjusted Rand index (Hubert & Arabie, 1985): 1 is a perfect match, and
ARI is 0 in expectation for a random one.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.base import BaseEstimator, ClusterMixin
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
from sklearn.utils.validation import check_is_fitted


def _squared_distances(points: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    products = points @ centers.T
    return (points.square().sum(1, keepdim=True) - 2 * products + centers.square().sum(1)).clamp_min_(0)


def _nearest(points: torch.Tensor, centers: torch.Tensor, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Index of, and squared distance to, every point's nearest centre (the lowest index at equal distance)."""
    nearest = [_squared_distances(points[start:start + batch_size], centers).min(dim=1)
               for start in range(0, len(points), batch_size)]
    return torch.cat([block.indices for block in nearest]), torch.cat([block.values for block in nearest])


def _kmeans_plusplus(points: torch.Tensor, k: int, rng: np.random.Generator, batch_size: int) -> torch.Tensor:
    centers = points[[rng.integers(len(points))]]
    closest = _nearest(points, centers, batch_size)[1]
    for _ in range(1, k):
        cumulative = closest.double().cumsum(0).cpu().numpy()
        draws = np.searchsorted(cumulative, rng.random(2 + int(np.log(k))) * cumulative[-1], side="right")
        candidates = points[np.minimum(draws, len(points) - 1)]  # the minimum guards an all-zero D², all duplicates
        potentials = torch.minimum(closest[:, None], _squared_distances(points, candidates))
        best = int(potentials.double().sum(0).argmin())
        closest = potentials[:, best].contiguous()
        centers = torch.cat([centers, candidates[best:best + 1]])
    return centers


def _lloyd(points: torch.Tensor, centers: torch.Tensor, max_iter: int, tolerance: float,
           batch_size: int) -> tuple[torch.Tensor, torch.Tensor, float, int]:
    iterations, shift = 0, float("inf")
    while iterations < max_iter and shift > tolerance:
        labels, distances = _nearest(points, centers, batch_size)
        counts = torch.bincount(labels, minlength=len(centers))
        sums = torch.zeros_like(centers).index_add_(0, labels, points)
        empty = (counts == 0).nonzero().flatten()
        if len(empty):
            sums[empty], counts[empty] = points[distances.topk(len(empty)).indices], 1
        moved = sums / counts[:, None]
        shift = (moved - centers).square().sum().item()
        centers, iterations = moved, iterations + 1
    labels, distances = _nearest(points, centers, batch_size)  # labels and inertia of the final centres
    return centers, labels, distances.double().sum().item(), iterations


class KMeans(ClusterMixin, BaseEstimator):
    """k-means++ and Lloyd in torch; `cluster_centers_` [k, d] stay on the features' device, `labels_` is NumPy."""

    def __init__(self, n_clusters: int = 8, n_init: int = 3, max_iter: int = 300, tol: float = 1e-4,
                 random_state: int | None = None, batch_size: int = 4096):
        self.n_clusters = n_clusters
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state
        self.batch_size = batch_size

    def fit(self, X, y=None) -> KMeans:
        points = torch.as_tensor(X)
        points = points if points.is_floating_point() else points.float()
        if not 1 <= self.n_clusters <= len(points) or self.n_init < 1 or self.max_iter < 1:
            raise ValueError(f"Need 1 <= n_clusters <= n_samples ({len(points)}), n_init >= 1 and max_iter >= 1; "
                             f"got n_clusters={self.n_clusters}, n_init={self.n_init}, max_iter={self.max_iter}")
        rng = np.random.default_rng(self.random_state)
        tolerance = self.tol * points.var(dim=0, unbiased=False).mean().item()
        best = None
        for _ in range(self.n_init):
            start = _kmeans_plusplus(points, self.n_clusters, rng, self.batch_size)
            run = _lloyd(points, start, self.max_iter, tolerance, self.batch_size)
            if best is None or run[2] < best[2]:
                best = run
        self.cluster_centers_, labels, self.inertia_, self.n_iter_ = best
        self.labels_ = labels.cpu().numpy()
        return self

    def predict(self, X) -> np.ndarray:
        check_is_fitted(self)
        points = torch.as_tensor(X).to(self.cluster_centers_)
        return _nearest(points, self.cluster_centers_, self.batch_size)[0].cpu().numpy()


def cluster_metrics(features, labels, n_clusters: int | None = None, seeds: Sequence[int] = (0, 1, 2),
                    n_init: int = 3, max_iter: int = 300, normalize: bool = True,
                    batch_size: int = 4096) -> dict[str, float]:
    """{"nmi", "nmi_std", "ari", "ari_std", "n_clusters", "runs"}: means and sample stds over one k-means per seed.

    n_clusters defaults to the number of distinct labels; the stds are nan for a single seed.
    """
    labels = np.asarray(labels)
    n_clusters = n_clusters or len(np.unique(labels))
    points = torch.as_tensor(features)
    points = points if points.is_floating_point() else points.float()
    points = F.normalize(points, dim=1) if normalize else points
    nmi, ari = [], []
    for seed in seeds:
        assigned = KMeans(n_clusters, n_init=n_init, max_iter=max_iter, random_state=seed,
                          batch_size=batch_size).fit(points).labels_
        nmi.append(normalized_mutual_info_score(labels, assigned))
        ari.append(adjusted_rand_score(labels, assigned))
    runs = len(nmi)
    return {"nmi": float(np.mean(nmi)), "nmi_std": float(np.std(nmi, ddof=1)) if runs > 1 else float("nan"),
            "ari": float(np.mean(ari)), "ari_std": float(np.std(ari, ddof=1)) if runs > 1 else float("nan"),
            "n_clusters": n_clusters, "runs": runs}
