"""Tip-Adapter against a brute-force reimplementation, its α/β search, Tip-Adapter-F's training, bad input, and
the speed of the feature-level heads."""

from __future__ import annotations

import functools
import time

import numpy as np
import pytest
import torch
from sklearn.base import clone
from threadpoolctl import threadpool_limits

from tests.adapt import synthetic
from tests.adapt.synthetic import normalise, zeroshot_accuracy
from transferlab.adapt.gda import GDA
from transferlab.adapt.tip_adapter import DEFAULT_ALPHAS, DEFAULT_BETAS, TipAdapter, TipAdapterF
from transferlab.errors import UserError


@pytest.fixture(autouse=True)
def one_blas_thread():
    """NumPy's BLAS on one thread too: on a busy 2-core machine its thread pool makes small products erratic."""
    with threadpool_limits(limits=1):
        yield


clip_like = functools.partial(synthetic.clip_like, noise=0.5)  # tighter classes than GDA's tests use


def brute_force(x, keys, labels, weights, alpha, beta, scale=100.0):
    """τ·x̂·Wᵀ + α Σ_j exp(−β(1 − x̂·k_j)) onehot(y_j), one sample and one key at a time."""
    logits = np.zeros((len(x), len(weights)))
    for i, row in enumerate(normalise(x)):
        logits[i] = scale * weights @ row
        for key, label in zip(keys, labels, strict=True):
            logits[i, label] += alpha * np.exp(-beta * (1 - row @ key))
    return logits


def test_decision_function_is_the_formula():
    weights, (x, y), _, (test_x, _) = clip_like(classes=4, d=8, shots=5, test_per_class=6)
    raw = 3.0 * x  # not normalised on the way in: the cache normalises
    model = TipAdapter(zeroshot_weights=weights, alpha=1.7, beta=2.5, zeroshot_scale=50.0).fit(raw, y)
    assert np.allclose(model.cache_keys_, normalise(raw))
    assert np.array_equal(model.cache_values_, np.eye(4)[y])
    expected = brute_force(2.0 * test_x, normalise(raw), y, weights, 1.7, 2.5, scale=50.0)
    assert np.allclose(model.decision_function(2.0 * test_x), expected, rtol=1e-12, atol=1e-12)
    probabilities = np.exp(expected - expected.max(1, keepdims=True))
    assert np.allclose(model.predict_proba(test_x), probabilities / probabilities.sum(1, keepdims=True))
    assert np.array_equal(model.predict(test_x), expected.argmax(1))
    assert (model.alpha_, model.beta_, model.search_scores_) == (1.7, 2.5, None)


def test_alpha_zero_is_zero_shot():
    weights, (x, y), _, (test_x, test_y) = clip_like()
    model = TipAdapter(zeroshot_weights=weights, alpha=0.0).fit(x, y)
    assert np.allclose(model.decision_function(test_x), 100 * test_x @ weights.T, rtol=1e-12, atol=1e-12)
    assert model.score(test_x, test_y) == zeroshot_accuracy(weights, test_x, test_y)


def test_many_shots_of_separable_data_beat_zero_shot():
    weights, (x, y), _, (test_x, test_y) = clip_like(shots=64)
    zeroshot = zeroshot_accuracy(weights, test_x, test_y)
    assert zeroshot < 0.6
    assert TipAdapter(zeroshot_weights=weights).fit(x, y).score(test_x, test_y) > zeroshot + 0.25


def test_search_picks_the_best_validation_accuracy_smallest_beta_then_alpha():
    weights, (x, y), (val_x, val_y), (test_x, test_y) = clip_like(shots=32, noise=0.7)
    model = TipAdapter(zeroshot_weights=weights, val_x=val_x, val_y=val_y).fit(x, y)
    scores = model.search_scores_
    assert scores.shape == (len(DEFAULT_BETAS), len(DEFAULT_ALPHAS))
    row, column = DEFAULT_BETAS.index(model.beta_), DEFAULT_ALPHAS.index(model.alpha_)
    assert scores[row, column] == scores.max() == model.score(val_x, val_y)
    assert not (scores[:row] == scores.max()).any() and not (scores[row, :column] == scores.max()).any()
    at_defaults = TipAdapter(zeroshot_weights=weights).fit(x, y)
    assert scores.max() >= at_defaults.score(val_x, val_y)
    assert model.score(test_x, test_y) > at_defaults.score(test_x, test_y)  # the defaults are far off on this task
    brute = brute_force(test_x[:20], x, y, weights, model.alpha_, model.beta_)
    assert np.allclose(model.decision_function(test_x[:20]), brute)

    grid = TipAdapter(zeroshot_weights=weights, alphas=[0.5, 2.0], betas=[1.0], val_x=val_x, val_y=val_y).fit(x, y)
    assert grid.search_scores_.shape == (1, 2) and grid.beta_ == 1.0 and grid.alpha_ in (0.5, 2.0)


def test_tip_adapter_f_trains_the_keys_deterministically():
    weights, (x, y), (val_x, val_y), (test_x, test_y) = clip_like(shots=32, noise=0.7)
    before = torch.get_rng_state()
    model = TipAdapterF(zeroshot_weights=weights, epochs=10, batch_size=64, seed=3).fit(x, y)
    assert torch.equal(torch.get_rng_state(), before)  # its own generator, not the global one
    again = TipAdapterF(zeroshot_weights=weights, epochs=10, batch_size=64, seed=3).fit(x, y)
    other = TipAdapterF(zeroshot_weights=weights, epochs=10, batch_size=64, seed=4).fit(x, y)
    assert np.array_equal(model.cache_keys_, again.cache_keys_) and model.loss_curve_ == again.loss_curve_
    assert not np.array_equal(model.cache_keys_, other.cache_keys_)  # the seed orders the batches
    assert len(model.loss_curve_) == 10 and model.n_iter_ == 10 * 5
    assert model.loss_curve_[-1] < 0.8 * model.loss_curve_[0]
    assert not np.allclose(model.cache_keys_, normalise(x))
    training_free = TipAdapter(zeroshot_weights=weights).fit(x, y)
    assert model.score(x, y) > training_free.score(x, y)
    assert model.score(test_x, test_y) > training_free.score(test_x, test_y)

    searched = TipAdapterF(zeroshot_weights=weights, val_x=val_x, val_y=val_y).fit(x, y)
    assert searched.search_scores_.max() == searched.score(val_x, val_y)
    whole_set = TipAdapterF(zeroshot_weights=weights, seed=1).fit(x, y)  # 320 examples: two batches of 256
    assert whole_set.n_iter_ == 40


def test_full_batch_training_does_not_depend_on_the_seed():
    weights, (x, y), _, _ = clip_like()
    first = TipAdapterF(zeroshot_weights=weights, seed=0).fit(x, y)
    second = TipAdapterF(zeroshot_weights=weights, seed=1).fit(x, y)
    assert np.array_equal(first.cache_keys_, second.cache_keys_) and first.n_iter_ == 20


@pytest.mark.parametrize("estimator", [TipAdapter, TipAdapterF])
def test_zeroshot_weights_are_required_and_must_match(estimator):
    weights, (x, y), (val_x, val_y), _ = clip_like(classes=4, d=8)
    with pytest.raises(UserError, match=rf"{estimator.__name__} needs zeroshot_weights"):
        estimator().fit(x, y)
    with pytest.raises(UserError, match=r"has 4 rows .* class indices 0\.\.3"):
        estimator(zeroshot_weights=weights).fit(x, y + 1)
    with pytest.raises(UserError, match=r"has 5 rows"):
        estimator(zeroshot_weights=np.vstack([weights, weights[:1]])).fit(x, y)
    with pytest.raises(UserError, match=r"shape \(4, 6\) .* shape \(64, 8\)"):
        estimator(zeroshot_weights=weights[:, :6]).fit(x, y)
    with pytest.raises(UserError, match=r"8-dimensional .* shape \(64, 6\)"):
        estimator(zeroshot_weights=weights, val_x=val_x[:, :6], val_y=val_y).fit(x, y)
    with pytest.raises(UserError, match="val_y must hold class indices"):
        estimator(zeroshot_weights=weights, val_x=val_x, val_y=val_y + 1).fit(x, y)


def test_params_clone_and_torch_inputs():
    weights, (x, y), (val_x, val_y), (test_x, _) = clip_like()
    model = TipAdapterF(zeroshot_weights=weights, epochs=3, seed=7)
    assert set(model.get_params()) == {"zeroshot_weights", "zeroshot_scale", "alpha", "beta", "alphas", "betas",
                                       "val_x", "val_y", "epochs", "lr", "batch_size", "weight_decay", "seed"}
    assert clone(model).get_params()["seed"] == 7 and clone(model).epochs == 3
    tensors = [torch.tensor(a, dtype=torch.float32) for a in (weights, x, val_x, test_x)]
    fitted = TipAdapter(zeroshot_weights=tensors[0], val_x=tensors[2], val_y=torch.tensor(val_y))
    fitted.fit(tensors[1], torch.tensor(y))
    reference = TipAdapter(zeroshot_weights=weights, val_x=val_x, val_y=val_y).fit(x, y)
    assert (fitted.alpha_, fitted.beta_) == (reference.alpha_, reference.beta_)
    assert np.allclose(fitted.decision_function(tensors[3]), reference.decision_function(test_x), atol=1e-4)


@pytest.mark.slow
def test_heads_fit_and_score_ten_classes_of_sixteen_shots_within_a_second():
    weights, (x, y), (val_x, val_y), (test_x, test_y) = clip_like(d=128)
    heads = {"GDA": GDA(zeroshot_weights=weights, val_x=val_x, val_y=val_y),
             "TipAdapter": TipAdapter(zeroshot_weights=weights, val_x=val_x, val_y=val_y),
             "TipAdapterF": TipAdapterF(zeroshot_weights=weights, val_x=val_x, val_y=val_y)}
    for head in heads.values():  # imports and first-call set-up are not the method's cost
        clone(head).fit(x[::16], y[::16]).score(test_x[:10], test_y[:10])
    for name, head in heads.items():
        seconds = []
        for _ in range(3):  # the best of three: the machine is shared
            start = time.perf_counter()
            clone(head).fit(x, y).score(test_x, test_y)
            seconds.append(time.perf_counter() - start)
        assert min(seconds) < 1.0, f"{name}: {min(seconds):.3f} s"
