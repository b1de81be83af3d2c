"""The L-BFGS linear probe against scikit-learn's LogisticRegression, its estimator API, and λ selection."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from transferlab.adapt.linear_probe import LinearProbe, probe_with_validation


@pytest.fixture(scope="module")
def digits():
    x, y = load_digits(return_X_y=True)
    return x[:500] / 16.0, y[:500]


@pytest.mark.parametrize("weight_decay", [1e-2, 1e-3])
def test_probe_matches_sklearn_logistic_regression(digits, weight_decay):
    x, y = digits
    probe = LinearProbe(weight_decay=weight_decay).fit(x, y)
    reference = LogisticRegression(C=1 / (weight_decay * len(x)), tol=1e-10, max_iter=10_000).fit(x, y)
    assert np.array_equal(probe.classes_, reference.classes_)
    assert np.abs(probe.coef_ - reference.coef_).max() < 1e-3
    assert np.abs(probe.predict_proba(x) - reference.predict_proba(x)).max() < 5e-4
    assert np.array_equal(probe.predict(x), reference.predict(x))
    # the same objective, reached at least as exactly as sklearn at tol=1e-10
    assert objective(probe, x, y, weight_decay) <= objective(reference, x, y, weight_decay) + 1e-9


def objective(model, x, y, weight_decay):
    """Mean cross-entropy + λ/2 ‖W‖², computed from the fitted coefficients."""
    probabilities = model.predict_proba(x)
    return -np.log(probabilities[np.arange(len(y)), y]).mean() + 0.5 * weight_decay * (model.coef_ ** 2).sum()


def test_string_labels_are_kept_as_classes(digits):
    x, y = digits
    names = np.array(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"])
    probe = LinearProbe(weight_decay=1e-2, max_iter=100).fit(x[:200], names[y[:200]])
    assert list(probe.classes_) == sorted(names)
    assert set(probe.predict(x[200:300])) <= set(names)
    assert probe.score(x[:200], names[y[:200]]) > 0.95


def test_clone_and_params_round_trip():
    probe = LinearProbe(weight_decay=0.3, max_iter=7)
    assert probe.get_params() == {"weight_decay": 0.3, "max_iter": 7, "tol": 1e-8, "warm_start": False, "device": "cpu",
                                  "dtype": "float64"}
    copy = clone(probe)
    assert copy is not probe and copy.get_params() == probe.get_params()
    assert probe.set_params(weight_decay=0.01) is probe
    assert probe.weight_decay == 0.01 and copy.weight_decay == 0.3


def test_probe_works_inside_a_pipeline(digits):
    x, y = digits
    pipeline = Pipeline([("scale", StandardScaler()), ("probe", LinearProbe(weight_decay=1e-2, max_iter=100))])
    pipeline.fit(x[:300], y[:300])
    scaler = StandardScaler().fit(x[:300])
    direct = LinearProbe(weight_decay=1e-2, max_iter=100).fit(scaler.transform(x[:300]), y[:300])
    assert np.array_equal(pipeline.predict(x[300:]), direct.predict(scaler.transform(x[300:])))
    assert pipeline.score(x[300:], y[300:]) > 0.85


def test_probe_works_in_grid_search(digits):
    x, y = digits
    search = GridSearchCV(LinearProbe(max_iter=100), {"weight_decay": [1e-3, 10.0]}, cv=3).fit(x[:300], y[:300])
    assert search.best_params_ == {"weight_decay": 1e-3}
    assert search.best_score_ > 0.85
    assert search.score(x[300:], y[300:]) > 0.85


def test_probe_with_validation_picks_best_lambda_and_refits_on_train_and_val(digits):
    """Against brute force: each λ fitted from scratch to convergence, the best refit on train + val."""
    x, y = digits
    train, val, test = slice(0, 250), slice(250, 400), slice(400, 500)
    grid = [1e-4, 1e-2, 1.0, 10.0]
    probe, scores = probe_with_validation(x[train], y[train], x[val], y[val], grid, max_iter=5000, refine=False,
                                          sweep_tol=1e-8)

    brute = {wd: accuracy_score(y[val], LinearProbe(wd, 5000).fit(x[train], y[train]).predict(x[val])) for wd in grid}
    best = max(grid, key=lambda wd: (brute[wd], wd))
    assert scores == pytest.approx(brute)
    assert probe.weight_decay == best
    assert len(set(brute.values())) > 1

    refit = LinearProbe(best, 5000).fit(np.concatenate([x[train], x[val]]), np.concatenate([y[train], y[val]]))
    assert np.array_equal(probe.predict(x[test]), refit.predict(x[test]))
    both_x, both_y = np.concatenate([x[train], x[val]]), np.concatenate([y[train], y[val]])
    assert objective(probe, both_x, both_y, best) == pytest.approx(objective(refit, both_x, both_y, best), abs=1e-8)


def test_refinement_tries_quarter_and_half_decades_around_the_best_coarse_penalty(digits):
    x, y = digits
    grid = [1e-4, 1e-2, 1.0]
    _, coarse = probe_with_validation(x[:250], y[:250], x[250:400], y[250:400], grid, max_iter=200, refine=False)
    best = max(coarse, key=lambda wd: (coarse[wd], wd))
    probe, scores = probe_with_validation(x[:250], y[:250], x[250:400], y[250:400], grid, max_iter=200)
    expected = set(grid) | {best * 10 ** step for step in (-0.5, -0.25, 0.25, 0.5)}
    assert sorted(scores) == pytest.approx(sorted(expected))
    assert probe.weight_decay == max(scores, key=lambda wd: (scores[wd], wd))
    assert scores[probe.weight_decay] >= coarse[best]


def test_the_fit_does_not_depend_on_where_the_features_sit_in_memory(digits):
    # float32 BLAS kernels round differently at different buffer alignments; features read back from a cache
    # file must give the same sweep, the same λ and the same weights as the in-memory array they were saved from
    x, y = digits[0].astype(np.float32), digits[1]
    fits = []
    for offset in range(4):  # 4-byte steps: every alignment of a float32 buffer modulo 16
        buffer = np.empty(x.size + 8, np.float32)
        shifted = buffer[offset:offset + x.size].reshape(x.shape)
        shifted[...] = x
        probe, scores = probe_with_validation(shifted[:350], y[:350], shifted[350:], y[350:],
                                              [1e-2, 1e-3, 1e-4])
        fits.append((scores, probe.weight_decay, probe.coef_))
    for scores, weight_decay, coef in fits[1:]:
        assert scores == fits[0][0] and weight_decay == fits[0][1]
        assert np.array_equal(coef, fits[0][2])
