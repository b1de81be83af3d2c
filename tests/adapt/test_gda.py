"""GDA against scikit-learn's shrunk LDA, its zero-shot ensemble and α search, the one-shot case, bad input, and
the linear probe started at the zero-shot classifier."""

from __future__ import annotations

import warnings
from functools import partial

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from tests.adapt.synthetic import clip_like, zeroshot_accuracy
from transferlab.adapt.gda import DEFAULT_ALPHAS, GDA
from transferlab.adapt.linear_probe import LinearProbe
from transferlab.adapt.zeroshot_probe import ZeroShotInitProbe
from transferlab.errors import UserError
from transferlab.evaluate.fewshot import fewshot_curve


@pytest.fixture(autouse=True)
def one_blas_thread():
    """NumPy's BLAS on one thread too: on a busy 2-core machine its thread pool makes small products erratic."""
    with threadpool_limits(limits=1):
        yield


def gaussian_classes(counts=(5, 8, 12, 20), d=10, seed=0):
    """Raw (not normalised) features of classes with unequal sizes, so the two kinds of priors differ."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(len(counts)), counts)
    scales = rng.uniform(0.5, 2.0, d)
    return rng.normal(size=(len(y), d)) * scales + 2 * rng.normal(size=(len(counts), d))[y], y




@pytest.mark.parametrize("solver", ["lsqr", "eigen"])
@pytest.mark.parametrize("priors", ["uniform", "empirical"])
@pytest.mark.parametrize("shrinkage", [0.0, 0.1, 0.5, 1.0])
def test_matches_sklearn_shrunk_lda(solver, priors, shrinkage):
    x, y = gaussian_classes()
    test_x, _ = gaussian_classes(seed=1)
    sklearn_priors = np.full(4, 0.25) if priors == "uniform" else None
    reference = LinearDiscriminantAnalysis(solver=solver, shrinkage=shrinkage, priors=sklearn_priors).fit(x, y)
    model = GDA(shrinkage=shrinkage, priors=priors).fit(x, y)
    assert np.allclose(model.priors_, reference.priors_, rtol=0, atol=1e-12)
    assert np.allclose(model.covariance_, reference.covariance_, rtol=0, atol=1e-10)
    assert np.allclose(model.coef_, reference.coef_, rtol=0, atol=1e-8)
    assert np.allclose(model.intercept_, reference.intercept_, rtol=0, atol=1e-8)
    assert np.allclose(model.decision_function(test_x), reference.decision_function(test_x), rtol=0, atol=1e-8)
    assert np.allclose(model.predict_proba(test_x), reference.predict_proba(test_x), rtol=0, atol=1e-10)
    assert np.array_equal(model.predict(test_x), reference.predict(test_x))
    assert model.alpha_ is None


def test_priors_change_the_fit_on_unbalanced_classes():
    x, y = gaussian_classes()
    uniform, empirical = GDA(priors="uniform").fit(x, y), GDA(priors="empirical").fit(x, y)
    assert not np.allclose(uniform.covariance_, empirical.covariance_)
    assert np.allclose(uniform.priors_, 0.25) and np.allclose(empirical.priors_, np.array([5, 8, 12, 20]) / 45)


def test_binary_and_string_labels_match_sklearn():
    x, y = gaussian_classes(counts=(10, 14), d=6, seed=2)
    names = np.array(["cat", "dog"])
    reference = LinearDiscriminantAnalysis(solver="lsqr", shrinkage=0.3, priors=[0.5, 0.5]).fit(x, names[y])
    model = GDA(shrinkage=0.3).fit(x, names[y])
    scores = model.decision_function(x)  # scikit-learn keeps one column for two classes: class 1 minus class 0
    assert np.allclose(model.coef_[1] - model.coef_[0], reference.coef_[0], rtol=0, atol=1e-8)
    assert np.allclose(scores[:, 1] - scores[:, 0], reference.decision_function(x), rtol=0, atol=1e-8)
    assert np.allclose(model.predict_proba(x), reference.predict_proba(x), rtol=0, atol=1e-10)
    assert list(model.classes_) == ["cat", "dog"] and np.array_equal(model.predict(x), reference.predict(x))


def test_unshrunk_singular_covariance_gives_sklearns_minimum_norm_solution():
    x, y = gaussian_classes(counts=(6, 7, 8), d=30, seed=3)  # 21 samples in 30 dimensions
    reference = LinearDiscriminantAnalysis(solver="lsqr", shrinkage=0.0, priors=np.full(3, 1 / 3)).fit(x, y)
    model = GDA(shrinkage=0.0).fit(x, y)
    assert np.allclose(model.coef_, reference.coef_, rtol=1e-6, atol=1e-8)
    assert np.allclose(model.intercept_, reference.intercept_, rtol=1e-6, atol=1e-8)


def test_a_class_with_one_example_among_others_matches_sklearn():
    x, y = gaussian_classes(counts=(1, 6, 9), d=5, seed=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scikit-learn: "Only one sample available"
        reference = LinearDiscriminantAnalysis(solver="lsqr", shrinkage=0.2, priors=np.full(3, 1 / 3)).fit(x, y)
    model = GDA(shrinkage=0.2).fit(x, y)
    assert np.allclose(model.coef_, reference.coef_, rtol=0, atol=1e-8)
    assert np.allclose(model.intercept_, reference.intercept_, rtol=0, atol=1e-8)


@pytest.mark.parametrize("shrinkage", [0.0, 0.5, 1.0])
def test_one_shot_per_class_is_euclidean_nearest_class_mean(shrinkage):
    weights, _, _, (test_x, test_y) = clip_like(d=16)
    x, y = clip_like(d=16, shots=1, seed=5)[1]
    model = GDA(shrinkage=shrinkage).fit(x, y)
    variance = np.square(x - x.mean(0)).sum() / len(x) / x.shape[1]
    assert np.allclose(model.covariance_, variance * np.eye(16))
    assert np.all(np.isfinite(model.coef_)) and np.all(np.isfinite(model.intercept_))
    assert np.array_equal(model.predict(x), y)
    distances = np.square(test_x[:, None] - x[None]).sum(axis=2)  # the class means are the examples themselves
    assert np.array_equal(model.predict(test_x), y[distances.argmin(axis=1)])
    ensemble = GDA(shrinkage=shrinkage, zeroshot_weights=weights).fit(x, y)
    assert np.all(np.isfinite(ensemble.decision_function(test_x)))


def test_ensemble_alpha_search_is_at_least_zero_shot_on_validation():
    weights, (x, y), (val_x, val_y), (test_x, _) = clip_like()
    model = GDA(zeroshot_weights=weights, val_x=val_x, val_y=val_y).fit(x, y)
    zeroshot_val = zeroshot_accuracy(weights, val_x, val_y)
    assert sorted(model.alpha_scores_) == sorted(DEFAULT_ALPHAS)
    assert model.alpha_scores_[0.0] == pytest.approx(zeroshot_val)
    best = max(model.alpha_scores_.values())
    assert model.alpha_ == min(a for a, accuracy in model.alpha_scores_.items() if accuracy == best)
    assert model.score(val_x, val_y) == pytest.approx(best) and best >= zeroshot_val
    assert best > zeroshot_val + 0.1  # on this task GDA helps a lot
    brute = 100 * test_x @ weights.T + model.alpha_ * (test_x @ model.coef_.T + model.intercept_)
    assert np.allclose(model.decision_function(test_x), brute)
    assert np.allclose(model.predict_proba(test_x).sum(1), 1)


def test_ties_go_to_the_smaller_alpha_and_without_validation_alpha_is_the_parameter():
    weights, (x, y), _, _ = clip_like(noise=0.3, text_noise=0.3)  # zero-shot and GDA are both perfect on these
    assert zeroshot_accuracy(weights, x, y) == 1.0
    assert GDA(zeroshot_weights=weights, val_x=x, val_y=y).fit(x, y).alpha_ == 0.0
    assert GDA(zeroshot_weights=weights, alphas=[3.0, 0.5, 2.0], val_x=x, val_y=y).fit(x, y).alpha_ == 0.5
    model = GDA(zeroshot_weights=weights, alpha=0.25).fit(x, y)
    assert model.alpha_ == 0.25 and model.alpha_scores_ is None


def test_zeroshot_weights_must_match_classes_and_dimensions():
    weights, (x, y), _, _ = clip_like(classes=4, d=8)
    with pytest.raises(UserError, match=r"has 3 rows .* class indices 0\.\.2"):
        GDA(zeroshot_weights=weights[:3]).fit(x, y)
    with pytest.raises(UserError, match=r"shape \(4, 7\) .* shape \(64, 8\)"):
        GDA(zeroshot_weights=weights[:, :7]).fit(x, y)
    model = GDA(zeroshot_weights=weights).fit(x, y)
    with pytest.raises(UserError, match=r"8-dimensional .* shape \(5, 7\)"):
        model.predict(x[:5, :7])
    with pytest.raises(UserError, match="val_x and val_y"):
        GDA(zeroshot_weights=weights, val_x=x).fit(x, y)


def test_bad_parameters_and_single_class_are_refused():
    x, y = gaussian_classes()
    with pytest.raises(ValueError, match="shrinkage"):
        GDA(shrinkage=1.5).fit(x, y)
    with pytest.raises(ValueError, match="priors"):
        GDA(priors="balanced").fit(x, y)
    with pytest.raises(UserError, match="two classes"):
        GDA().fit(x, np.zeros(len(x), dtype=int))
    with pytest.raises(UserError, match="identical"):
        GDA().fit(np.ones((4, 3)), [0, 0, 1, 1])


def test_torch_float32_inputs_give_the_float64_fit():
    weights, (x, y), (val_x, val_y), (test_x, _) = clip_like()
    as_tensor = partial(torch.tensor, dtype=torch.float32)
    model = GDA(zeroshot_weights=as_tensor(weights), val_x=as_tensor(val_x), val_y=torch.tensor(val_y))
    model.fit(as_tensor(x), torch.tensor(y))
    reference = GDA(zeroshot_weights=weights, val_x=val_x, val_y=val_y).fit(x, y)
    assert model.alpha_ == reference.alpha_
    scale = np.abs(reference.decision_function(test_x)).max()
    assert np.allclose(model.decision_function(as_tensor(test_x)), reference.decision_function(test_x),
                       rtol=0, atol=1e-5 * scale)


def test_clone_params_pipeline_and_grid_search():
    weights, (x, y), (val_x, val_y), (test_x, test_y) = clip_like()
    model = GDA(shrinkage=0.3, zeroshot_weights=weights, val_x=val_x, val_y=val_y)
    params = model.get_params()
    assert set(params) == {"shrinkage", "priors", "zeroshot_weights", "zeroshot_scale", "alpha", "alphas", "val_x",
                           "val_y"}
    copy = clone(model)
    assert copy is not model and copy.shrinkage == 0.3 and np.array_equal(copy.zeroshot_weights, weights)
    assert np.array_equal(copy.fit(x, y).predict(test_x), model.fit(x, y).predict(test_x))
    pipeline = Pipeline([("scale", StandardScaler()), ("gda", GDA())]).fit(x, y)
    scaler = StandardScaler().fit(x)
    direct = GDA().fit(scaler.transform(x), y)
    assert np.array_equal(pipeline.predict(test_x), direct.predict(scaler.transform(test_x)))
    search = GridSearchCV(GDA(), {"shrinkage": [0.1, 0.9]}, cv=3).fit(x, y)
    assert search.best_params_["shrinkage"] in (0.1, 0.9)


def test_fewshot_curve_hands_gda_its_few_shot_validation_set():
    weights, (x, y), (val_x, val_y), (test_x, test_y) = clip_like()
    curve = fewshot_curve(partial(GDA, zeroshot_weights=weights), x, y, test_x, test_y, shots=(1, 4), seeds=2,
                          val=(val_x, val_y))
    zeroshot = zeroshot_accuracy(weights, test_x, test_y)
    assert curve[4]["mean"] > zeroshot and all(np.isfinite(curve[k]["mean"]) for k in (1, 4))


def test_probe_from_zero_shot_starts_at_zero_shot_and_reaches_the_zero_init_optimum():
    weights, (x, y), _, (test_x, _) = clip_like(classes=4, d=8, shots=20)
    start = ZeroShotInitProbe(zeroshot_weights=weights, max_iter=0).fit(x, y)
    assert start.n_iter_ == 0
    assert np.allclose(start.decision_function(test_x), 100 * test_x @ weights.T)
    assert np.array_equal(start.predict(test_x), (test_x @ weights.T).argmax(1))

    probe = ZeroShotInitProbe(zeroshot_weights=weights, weight_decay=1e-2).fit(x, y)
    reference = LinearProbe(weight_decay=1e-2).fit(x, y)
    assert probe.n_iter_ > 0
    assert np.abs(probe.coef_ - reference.coef_).max() < 1e-4
    assert np.abs(probe.intercept_ - reference.intercept_).max() < 1e-4
    assert np.abs(probe.predict_proba(test_x) - reference.predict_proba(test_x)).max() < 1e-5
    assert set(probe.get_params()) == {"zeroshot_weights", "zeroshot_scale", "weight_decay", "max_iter", "tol",
                                       "device", "dtype"}
    assert clone(probe).get_params()["weight_decay"] == 1e-2
    with pytest.raises(UserError, match="needs zeroshot_weights"):
        ZeroShotInitProbe().fit(x, y)
