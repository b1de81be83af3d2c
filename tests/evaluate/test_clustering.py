"""Torch k-means against scikit-learn's KMeans and metrics, on separated blobs and on digits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.cluster import KMeans as SklearnKMeans
from sklearn.datasets import load_digits
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from transferlab.evaluate.clustering import KMeans, cluster_metrics


@pytest.fixture(scope="module")
def digits():
    x, y = load_digits(return_X_y=True)
    return x, y


def sphere_blobs(n=600, classes=8, d=32, noise=0.05, seed=0):
    """Tight classes around random directions, normalised like image embeddings."""
    rng = np.random.default_rng(seed)
    directions = rng.normal(size=(classes, d))
    y = rng.integers(0, classes, n)
    x = directions[y] / np.linalg.norm(directions[y], axis=1, keepdims=True) + noise * rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), y


def test_separated_blobs_are_recovered():
    x, y = sphere_blobs()
    metrics = cluster_metrics(x, y)
    assert metrics["nmi"] > 0.999 and metrics["ari"] > 0.999
    assert metrics["n_clusters"] == 8 and metrics["runs"] == 3


def test_metrics_are_sklearns_on_the_same_assignments(digits):
    x, y = digits
    seeds = (4, 5)
    metrics = cluster_metrics(x, y, seeds=seeds, n_init=1)
    normalised = x / np.linalg.norm(x, axis=1, keepdims=True)
    assignments = [KMeans(10, n_init=1, random_state=seed).fit(normalised).labels_ for seed in seeds]
    nmi = [normalized_mutual_info_score(y, a) for a in assignments]
    ari = [adjusted_rand_score(y, a) for a in assignments]
    assert metrics["nmi"] == pytest.approx(np.mean(nmi)) and metrics["nmi_std"] == pytest.approx(np.std(nmi, ddof=1))
    assert metrics["ari"] == pytest.approx(np.mean(ari)) and metrics["ari_std"] == pytest.approx(np.std(ari, ddof=1))
    assert 0.5 < metrics["nmi"] < 0.95
    single = cluster_metrics(x, y, n_clusters=12, seeds=(4,), n_init=1)
    assert single["n_clusters"] == 12 and np.isnan(single["nmi_std"]) and np.isnan(single["ari_std"])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_inertia_is_as_low_as_sklearns_and_consistent_with_the_fit(digits, dtype):
    x = digits[0].astype(dtype)
    model = KMeans(10, n_init=3, random_state=0).fit(x)
    reference = SklearnKMeans(10, n_init=3, random_state=0).fit(x)
    assert model.inertia_ <= 1.05 * reference.inertia_
    centers = model.cluster_centers_.double().numpy()
    distances = ((x[:, None, :].astype(np.float64) - centers[None]) ** 2).sum(-1)
    assert np.array_equal(model.labels_, distances.argmin(1))
    assert model.inertia_ == pytest.approx(distances.min(1).sum(), rel=1e-5)
    assert np.array_equal(model.predict(x), model.labels_)
    assert set(model.labels_) == set(range(10))


def test_a_seed_fixes_the_clustering(digits):
    x = digits[0][:600]
    first, again = KMeans(10, random_state=3).fit(x), KMeans(10, random_state=3).fit(torch.from_numpy(x))
    assert np.array_equal(first.labels_, again.labels_) and torch.equal(first.cluster_centers_, again.cluster_centers_)
    assert not torch.equal(first.cluster_centers_, KMeans(10, random_state=4).fit(x).cluster_centers_)


def test_duplicate_points_and_more_clusters_than_distinct_points():
    x = np.repeat(np.array([[0.0, 0.0], [5.0, 0.0], [0.0, 5.0]]), 10, axis=0)
    exact = KMeans(3, random_state=0).fit(x)
    assert exact.inertia_ == 0 and len(set(exact.labels_)) == 3
    assert KMeans(4, random_state=0).fit(x).inertia_ == 0


def test_estimator_api(digits):
    x = digits[0][:300]
    model = KMeans(n_clusters=5, random_state=1)
    assert clone(model).get_params() == model.get_params() == {
        "n_clusters": 5, "n_init": 3, "max_iter": 300, "tol": 1e-4, "random_state": 1, "batch_size": 4096}
    assert np.array_equal(clone(model).fit_predict(x), model.fit(x).labels_)
    pipeline = Pipeline([("scale", StandardScaler()), ("kmeans", KMeans(5, random_state=1))]).fit(x)
    direct = KMeans(5, random_state=1).fit(StandardScaler().fit_transform(x))
    assert np.array_equal(pipeline.predict(x), direct.labels_)
    with pytest.raises(ValueError, match="n_clusters"):
        KMeans(301).fit(x)
