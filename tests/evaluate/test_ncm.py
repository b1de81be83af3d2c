"""Nearest class mean against scikit-learn's NearestCentroid (euclidean) and a NumPy brute force (cosine)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.neighbors import NearestCentroid
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from transferlab.evaluate.ncm import NearestClassMean


def blobs(n=400, d=12, classes=5, seed=0):
    """Classes of different spreads, so cosine and euclidean NCM disagree on some points."""
    rng = np.random.default_rng(seed)
    centers, spreads = rng.normal(size=(classes, d)), rng.uniform(0.5, 2.5, classes)
    y = rng.integers(0, classes, n)
    x = centers[y] + spreads[y, None] * rng.normal(size=(n, d))
    return x[: n // 2], y[: n // 2], x[n // 2:], y[n // 2:]


def normalise(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_euclidean_matches_nearest_centroid_on_normalised_features():
    train_x, train_y, test_x, _ = blobs()
    expected = NearestCentroid().fit(normalise(train_x), train_y)
    model = NearestClassMean(metric="euclidean").fit(train_x, train_y)
    assert np.allclose(model.centroids_.numpy(), expected.centroids_)
    assert np.array_equal(model.predict(test_x), expected.predict(normalise(test_x)))


def test_cosine_matches_brute_force_and_differs_from_euclidean():
    train_x, train_y, test_x, _ = blobs(seed=1)
    means = np.stack([normalise(train_x)[train_y == c].mean(0) for c in range(5)])
    similarities = normalise(test_x) @ normalise(means).T
    model = NearestClassMean().fit(train_x, train_y)
    assert np.allclose(model.decision_function(test_x), similarities)
    assert np.array_equal(model.predict(test_x), similarities.argmax(1))
    euclidean = NearestClassMean("euclidean").fit(train_x, train_y)
    assert not np.array_equal(model.predict(test_x), euclidean.predict(test_x))


def test_float32_tensors_and_string_labels():
    train_x, train_y, test_x, test_y = blobs(seed=2)
    names = np.array(["a", "b", "c", "d", "e"])
    model = NearestClassMean().fit(torch.tensor(train_x, dtype=torch.float32), names[train_y])
    assert model.centroids_.dtype == torch.float32 and list(model.classes_) == list(names)
    reference = NearestClassMean().fit(train_x, train_y)
    assert np.array_equal(model.predict(torch.tensor(test_x, dtype=torch.float32)), names[reference.predict(test_x)])
    assert model.score(test_x, names[test_y]) > 0.5


def test_clone_pipeline_and_grid_search_over_metric():
    train_x, train_y, test_x, _ = blobs(seed=3)
    model = NearestClassMean(metric="euclidean")
    assert clone(model).get_params() == {"metric": "euclidean"} and clone(model) is not model

    pipeline = Pipeline([("scale", StandardScaler()), ("ncm", NearestClassMean())]).fit(train_x, train_y)
    scaler = StandardScaler().fit(train_x)
    direct = NearestClassMean().fit(scaler.transform(train_x), train_y)
    assert np.array_equal(pipeline.predict(test_x), direct.predict(scaler.transform(test_x)))

    metrics = ["cosine", "euclidean"]
    search = GridSearchCV(NearestClassMean(), {"metric": metrics}, cv=4).fit(train_x, train_y)
    folds = list(StratifiedKFold(4).split(train_x, train_y))
    by_hand = [np.mean([NearestClassMean(m).fit(train_x[fit], train_y[fit]).score(train_x[held], train_y[held])
                        for fit, held in folds]) for m in metrics]
    assert np.allclose(search.cv_results_["mean_test_score"], by_hand)


def test_unknown_metric_is_refused():
    train_x, train_y, _, _ = blobs(n=20)
    with pytest.raises(ValueError, match="metric"):
        NearestClassMean(metric="manhattan").fit(train_x, train_y)
