"""The kNN classifier against a NumPy brute force and scikit-learn, its tie order, its backends, sweep and API."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from transferlab.evaluate.knn import KNNClassifier, knn_sweep, select_k_on_validation

BACKENDS = [("torch", 4096), ("torch", 37), ("faiss", 4096)]  # 37 splits queries and training rows into blocks


def blobs(n_train=300, n_test=120, d=16, classes=6, seed=0):
    """Overlapping Gaussian classes, so that neighbours disagree and the weighting matters."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(classes, d))
    y = rng.integers(0, classes, n_train + n_test)
    x = (centers[y] + 1.2 * rng.normal(size=(len(y), d))).astype(np.float32)
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


def reference(train_x, train_y, test_x, k, temperature=0.07, uniform=False):
    """Neighbour indices, class probabilities and predictions from the full float64 similarity matrix."""
    train = train_x / np.linalg.norm(train_x, axis=1, keepdims=True)
    test = test_x / np.linalg.norm(test_x, axis=1, keepdims=True)
    similarities = test.astype(np.float64) @ train.astype(np.float64).T
    order = np.argsort(-similarities, axis=1, kind="stable")[:, :k]  # equal similarities: lower index first
    weights = np.ones(order.shape) if uniform else np.exp(np.take_along_axis(similarities, order, 1) / temperature)
    scores = np.zeros((len(test), train_y.max() + 1))
    np.add.at(scores, (np.arange(len(test))[:, None], train_y[order]), weights)
    return order, scores / scores.sum(1, keepdims=True), scores.argmax(1)


@pytest.mark.parametrize("backend,batch_size", BACKENDS)
@pytest.mark.parametrize("weights", ["exp", "uniform"])
def test_matches_brute_force(backend, batch_size, weights):
    train_x, train_y, test_x, _ = blobs()
    model = KNNClassifier(k=20, weights=weights, backend=backend, batch_size=batch_size).fit(train_x, train_y)
    order, probabilities, predictions = reference(train_x, train_y, test_x, 20, uniform=weights == "uniform")
    similarities, indices = model.kneighbors(test_x)
    assert model.backend_ == backend
    assert np.array_equal(indices, order)
    assert np.all(np.diff(similarities, axis=1) <= 0)
    assert np.allclose(model.predict_proba(test_x), probabilities, atol=1e-5)
    assert np.array_equal(model.predict(test_x), predictions)


@pytest.mark.parametrize("weights", ["exp", "uniform"])
def test_matches_sklearn_kneighbors_classifier(weights):
    train_x, train_y, test_x, _ = blobs(seed=1)
    temperature = 0.1
    # sklearn passes cosine distances 1 - s, so exp((1 - d) / T) = exp(s / T)
    sklearn_weights = "uniform" if weights == "uniform" else (lambda distances: np.exp((1 - distances) / temperature))
    expected = KNeighborsClassifier(n_neighbors=10, metric="cosine", weights=sklearn_weights).fit(train_x, train_y)
    model = KNNClassifier(k=10, temperature=temperature, weights=weights).fit(train_x, train_y)
    assert np.array_equal(model.predict(test_x), expected.predict(test_x))
    assert np.allclose(model.predict_proba(test_x), expected.predict_proba(test_x), atol=1e-5)


@pytest.mark.parametrize("backend,batch_size", BACKENDS)
def test_exact_ties_are_broken_by_training_index_then_class_order(backend, batch_size):
    """±1/4 vectors in 16-d have unit norm and similarities in multiples of 1/8, all exact: ties everywhere."""
    rng = np.random.default_rng(2)
    patterns = rng.choice([-0.25, 0.25], size=(12, 16)).astype(np.float32)
    train_x, train_y = patterns[rng.integers(0, 12, 400)], rng.integers(0, 4, 400)
    test_x = rng.choice([-0.25, 0.25], size=(60, 16)).astype(np.float32)
    model = KNNClassifier(k=16, weights="uniform", backend=backend, batch_size=batch_size).fit(train_x, train_y)
    order, probabilities, predictions = reference(train_x, train_y, test_x, 16, uniform=True)
    similarities, indices = model.kneighbors(test_x)
    assert np.array_equal(indices, order)
    assert np.array_equal(model.kneighbors(test_x[:5])[1], order[:5])  # faiss takes another path below 20 queries
    assert np.array_equal(similarities, np.take_along_axis(test_x @ train_x.T, order, 1))
    assert np.array_equal(model.predict_proba(test_x), probabilities)
    assert np.array_equal(model.predict(test_x), predictions)
    assert (np.sort(probabilities, 1)[:, -1] == np.sort(probabilities, 1)[:, -2]).any()  # class ties occurred


def test_features_are_normalised_inside_unless_metric_is_dot():
    train_x, train_y, test_x, _ = blobs(seed=3)
    rng = np.random.default_rng(3)
    scaled_train, scaled_test = train_x * rng.uniform(0.1, 10, (len(train_x), 1)), test_x * 5
    cosine = KNNClassifier(k=10).fit(train_x, train_y)
    assert np.array_equal(KNNClassifier(k=10).fit(scaled_train, train_y).predict(scaled_test), cosine.predict(test_x))
    normalised = train_x / np.linalg.norm(train_x, axis=1, keepdims=True)
    dot = KNNClassifier(k=10, metric="dot").fit(normalised, train_y)
    assert np.array_equal(dot.kneighbors(test_x)[1], cosine.kneighbors(test_x)[1])
    raw_dot = KNNClassifier(k=10, metric="dot").fit(scaled_train, train_y)
    assert not np.array_equal(raw_dot.kneighbors(test_x)[1], cosine.kneighbors(test_x)[1])


def test_torch_tensors_and_string_labels():
    train_x, train_y, test_x, test_y = blobs(seed=4)
    names = np.array(["ant", "bee", "cat", "dog", "eel", "fox"])
    model = KNNClassifier(k=5).fit(torch.from_numpy(train_x), names[train_y])
    assert list(model.classes_) == list(names)
    predicted = model.predict(torch.from_numpy(test_x))
    assert np.array_equal(predicted, names[KNNClassifier(k=5).fit(train_x, train_y).predict(test_x)])
    assert model.score(test_x, names[test_y]) == pytest.approx(np.mean(predicted == names[test_y]))


@pytest.mark.parametrize("backend,batch_size", BACKENDS)
def test_sweep_equals_separate_fits(backend, batch_size):
    train_x, train_y, test_x, test_y = blobs(seed=5)
    ks = (1, 4, 10, 33, 1000)  # 1000 > 300 training rows: clipped, i.e. every row votes
    params = {"backend": backend, "batch_size": batch_size, "temperature": 0.2}
    sweep = knn_sweep(train_x, train_y, test_x, test_y, ks, **params)
    separate = {k: KNNClassifier(k=k, **params).fit(train_x, train_y).score(test_x, test_y) for k in ks}
    assert sweep == separate
    assert len(set(sweep.values())) > 1


def test_select_k_on_validation_picks_best_and_refits_on_train_and_val():
    train_x, train_y, val_x, val_y = blobs(n_train=240, n_test=120, seed=6)
    test_x, test_y = blobs(n_train=0, n_test=80, seed=6)[2:]
    ks = (1, 3, 9, 27, 81)
    model, scores = select_k_on_validation(train_x, train_y, val_x, val_y, ks, weights="uniform")
    assert scores == {k: KNNClassifier(k=k, weights="uniform").fit(train_x, train_y).score(val_x, val_y) for k in ks}
    assert model.k == max(ks, key=lambda k: (scores[k], k)) and model.weights == "uniform"
    refit = KNNClassifier(k=model.k, weights="uniform").fit(np.concatenate([train_x, val_x]),
                                                            np.concatenate([train_y, val_y]))
    assert np.array_equal(model.predict(test_x), refit.predict(test_x))


def test_clone_and_params_round_trip():
    model = KNNClassifier(k=7, temperature=0.5, backend="torch")
    assert model.get_params() == {"k": 7, "temperature": 0.5, "metric": "cosine", "weights": "exp",
                                  "backend": "torch", "batch_size": 4096}
    copy = clone(model)
    assert copy is not model and copy.get_params() == model.get_params()
    assert model.set_params(k=3) is model and model.k == 3 and copy.k == 7


def test_pipeline_and_grid_search_over_k():
    train_x, train_y, test_x, test_y = blobs(seed=7)
    pipeline = Pipeline([("scale", StandardScaler()), ("knn", KNNClassifier(k=5))]).fit(train_x, train_y)
    scaler = StandardScaler().fit(train_x)
    direct = KNNClassifier(k=5).fit(scaler.transform(train_x), train_y)
    assert np.array_equal(pipeline.predict(test_x), direct.predict(scaler.transform(test_x)))

    grid = [1, 5, 25]
    search = GridSearchCV(KNNClassifier(), {"k": grid}, cv=3).fit(train_x, train_y)
    folds = list(StratifiedKFold(3).split(train_x, train_y))  # what cv=3 means for a classifier
    by_hand = [np.mean([KNNClassifier(k=k).fit(train_x[fit], train_y[fit]).score(train_x[held], train_y[held])
                        for fit, held in folds]) for k in grid]
    assert np.allclose(search.cv_results_["mean_test_score"], by_hand)
    assert search.best_params_ == {"k": grid[int(np.argmax(by_hand))]}


@pytest.mark.parametrize("params", [{"k": 0}, {"temperature": 0.0}, {"metric": "euclidean"}, {"weights": "distance"},
                                    {"backend": "annoy"}])
def test_invalid_parameters_are_refused_at_fit(params):
    train_x, train_y, _, _ = blobs(n_train=20, n_test=0)
    with pytest.raises(ValueError):
        KNNClassifier(**params).fit(train_x, train_y)
