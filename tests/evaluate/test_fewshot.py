"""Few-shot sampling (counts, determinism, short classes) and the curve's statistics against scipy's t-interval."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import scipy.stats
import torch
from sklearn.base import BaseEstimator, ClassifierMixin

from transferlab.evaluate.fewshot import fewshot_curve, sample_shots
from transferlab.evaluate.knn import KNNClassifier
from transferlab.evaluate.ncm import NearestClassMean

COUNTS = {0: 30, 1: 12, 2: 3, 3: 20}  # class 2 is shorter than 4, 8 and 16 shots


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    train_y = rng.permutation(np.repeat(list(COUNTS), list(COUNTS.values())))
    test_y = rng.integers(0, 4, 200)
    centers = rng.normal(size=(4, 8))
    train_x = (centers[train_y] + 1.5 * rng.normal(size=(len(train_y), 8))).astype(np.float32)
    test_x = (centers[test_y] + 1.5 * rng.normal(size=(len(test_y), 8))).astype(np.float32)
    return train_x, train_y, test_x, test_y


@pytest.mark.parametrize("shots", [1, 2, 4, 16, 64])
def test_sample_shots_takes_k_per_class_or_all_a_class_has(data, shots):
    labels = data[1]
    chosen = sample_shots(labels, shots, seed=0)
    assert np.array_equal(chosen, np.unique(chosen))  # sorted, no repeats
    assert {c: int(np.sum(labels[chosen] == c)) for c in COUNTS} == {c: min(shots, n) for c, n in COUNTS.items()}


def test_sampling_is_deterministic_per_seed_and_varies_across_seeds(data):
    labels = data[1]
    assert np.array_equal(sample_shots(labels, 4, 1), sample_shots(labels, 4, 1))
    draws = [tuple(sample_shots(labels, 4, seed)) for seed in range(5)]
    assert len(set(draws)) == 5
    assert np.array_equal(sample_shots(list(labels), 4, 1), sample_shots(labels, 4, 1))


def test_curve_statistics_match_an_independent_computation(data):
    train_x, train_y, test_x, test_y = data
    factory = functools.partial(KNNClassifier, k=3, backend="torch")
    seeds = [3, 11, 12, 40]
    curve = fewshot_curve(factory, train_x, train_y, test_x, test_y, shots=(1, 4, 16), seeds=seeds)
    assert list(curve) == [1, 4, 16]
    for shots, result in curve.items():
        scores = []
        for seed in seeds:
            chosen = sample_shots(train_y, shots, seed)
            predictions = factory().fit(train_x[chosen], train_y[chosen]).predict(test_x)
            scores.append(np.mean(predictions == test_y))
        low, high = scipy.stats.t.interval(0.95, df=len(seeds) - 1, loc=np.mean(scores), scale=scipy.stats.sem(scores))
        assert result["scores"] == pytest.approx(scores)
        assert result["n"] == 4
        assert result["mean"] == pytest.approx(np.mean(scores))
        assert result["std"] == pytest.approx(np.std(scores, ddof=1))
        assert result["ci95"] == pytest.approx((high - low) / 2)
        assert result["ci95"] > 0
    assert curve[1]["short_classes"] == {} and curve[4]["short_classes"] == {2: 3}
    assert curve[16]["short_classes"] == {1: 12, 2: 3}


def test_a_shot_count_is_drawn_the_same_whatever_else_is_asked(data):
    train_x, train_y, test_x, test_y = data
    alone = fewshot_curve(NearestClassMean, train_x, train_y, test_x, test_y, shots=(4,), seeds=3)
    among = fewshot_curve(NearestClassMean, train_x, train_y, test_x, test_y, shots=(1, 2, 4), seeds=3)
    assert alone[4] == among[4]


def test_shots_beyond_every_class_use_all_data_every_time(data):
    train_x, train_y, test_x, test_y = data
    curve = fewshot_curve(NearestClassMean, train_x, train_y, test_x, test_y, shots=(50,), seeds=3)
    full = NearestClassMean().fit(train_x, train_y).score(test_x, test_y)
    assert curve[50]["scores"] == [full] * 3
    assert curve[50]["std"] == 0 and curve[50]["ci95"] == 0
    assert curve[50]["short_classes"] == COUNTS


def test_one_seed_has_no_spread_and_each_fit_gets_a_fresh_estimator(data):
    train_x, train_y, test_x, test_y = data
    made = []

    def factory():
        made.append(NearestClassMean())
        return made[-1]

    curve = fewshot_curve(factory, torch.from_numpy(train_x), train_y, torch.from_numpy(test_x), test_y,
                          shots=(1, 2), seeds=[7])
    assert len({id(model) for model in made}) == 2
    assert curve[2]["n"] == 1 and np.isnan(curve[2]["std"]) and np.isnan(curve[2]["ci95"])
    chosen = sample_shots(train_y, 2, 7)
    assert curve[2]["mean"] == NearestClassMean().fit(train_x[chosen], train_y[chosen]).score(test_x, test_y)


class RecordsValidation(ClassifierMixin, BaseEstimator):
    def __init__(self, val_x=None, val_y=None):
        self.val_x, self.val_y = val_x, val_y

    def fit(self, X, y):
        seen.append((len(X), None if self.val_y is None else np.bincount(self.val_y).tolist()))
        self.classes_ = np.unique(y)
        return self

    def predict(self, X):
        return np.zeros(len(X), dtype=int)


seen: list = []


def test_estimators_that_tune_get_k_shots_per_class_of_the_val_split(data):
    train_x, train_y, val_x, val_y = data
    seen.clear()
    fewshot_curve(RecordsValidation, train_x, train_y, val_x, val_y, shots=[1, 2], seeds=2, val=(val_x, val_y))
    assert seen == [(4, [1] * 4)] * 2 + [(8, [2] * 4)] * 2
    seen.clear()
    fewshot_curve(RecordsValidation, train_x, train_y, val_x, val_y, shots=[1], seeds=1)  # no val: nothing set
    assert seen == [(4, None)]
