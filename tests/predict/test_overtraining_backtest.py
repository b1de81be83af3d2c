"""The study-of-language-models backtest: its baselines (the study's two laws fitted by least squares) recover known
laws, pick the study's runs, and a backtest on a made-up study whose runs follow the laws exactly has a known answer."""

from __future__ import annotations

import numpy as np
import pytest

from transferlab.errors import UserError
from transferlab.predict.backtest import summarise
from transferlab.predict.overtraining_backtest import (
    ErrorLaw,
    LossLaw,
    backtest_overtraining,
    fit_error_law,
    fit_loss_law,
    study_runs,
)

TRUE_LOSS = LossLaw(E=1.8, A=400.0, B=2000.0, alpha=0.3)
TRUE_ERROR = ErrorLaw(epsilon=0.85, k=2.0, gamma=0.6)
SMALL = (1.1e7, 7.9e7, 1.54e8, 4.11e8)
TARGET = "icl/avg17/acc1"


def made_up_study(data: str = "c4") -> list[dict]:
    """Runs laid out as the study's: four small sizes at M = 5 … 640, 1.4B at M = 20 and 640, 6.9B at M = 20."""
    shapes = [(n, m) for n in SMALL for m in (5, 10, 20, 40, 80, 160, 320, 640)] + [(1.4e9, 20), (1.4e9, 640),
                                                                                     (6.9e9, 20)]
    runs = []
    for n, m in shapes:
        loss = float(TRUE_LOSS(np.array(n), np.array(n * m)))
        runs.append({"run": f"{data}-{n:g}-{m}", "data": data, "params": n, "samples": n * m, "multiplier": m,
                     "flops": 6 * n * n * m, "loss": loss, TARGET: 1 - float(TRUE_ERROR(np.array(loss)))})
    return runs


def test_the_loss_law_is_recovered_from_runs_that_follow_it():
    N = np.array([1e7, 8e7, 1.5e8, 4e8, 1e7])
    D = N * np.array([20, 20, 20, 20, 320])
    fitted = fit_loss_law(N, D, TRUE_LOSS(N, D))
    assert (fitted.E, fitted.A, fitted.B, fitted.alpha) == pytest.approx((1.8, 400.0, 2000.0, 0.3), rel=1e-5)


def test_the_error_law_is_recovered_and_a_noisy_fit_is_least_squares():
    loss = np.linspace(2.5, 6.0, 8)
    fitted = fit_error_law(loss, TRUE_ERROR(loss))
    assert (fitted.epsilon, fitted.k, fitted.gamma) == pytest.approx((0.85, 2.0, 0.6), rel=1e-5)
    noisy = TRUE_ERROR(loss) + np.random.default_rng(0).normal(0, 0.01, len(loss))
    fitted = fit_error_law(loss, noisy)
    sse = np.sum((fitted(loss) - noisy) ** 2)
    for nudge in ([1e-3, 0, 0], [0, 1e-3, 0], [0, 0, 1e-3]):  # the optimum: every small move costs
        moved = ErrorLaw(fitted.epsilon + nudge[0], fitted.k * (1 + nudge[1]), fitted.gamma + nudge[2])
        assert np.sum((moved(loss) - noisy) ** 2) > sse


def test_the_study_fits_its_five_runs_and_adds_the_next_size_for_the_error_law():
    runs = made_up_study()[:-2]  # the 1.4B at M = 640 and the 6.9B are the held-out runs
    loss_runs, error_runs = study_runs(runs, "t")
    assert [(runs[i]["params"], runs[i]["multiplier"]) for i in loss_runs] == [
        (1.1e7, 20), (7.9e7, 20), (1.54e8, 20), (4.11e8, 20), (1.1e7, 320)]
    assert [(runs[i]["params"], runs[i]["multiplier"]) for i in error_runs[5:]] == [(1.4e9, 20)]
    with pytest.raises(UserError, match="one run of 1.1e\\+07 parameters at 320 tokens per parameter; there are 0"):
        study_runs([run for run in runs if run["multiplier"] != 320], "t")
    with pytest.raises(UserError, match="needs 5 model sizes"):
        study_runs([run for run in runs if run["params"] < 1e9], "t")


def test_a_backtest_on_a_study_that_follows_the_laws_has_a_known_answer():
    runs = made_up_study("c4") + made_up_study("rpj")
    rows = backtest_overtraining(runs, ["loss", TARGET], 2, bootstrap=10)
    assert [(row.series, row.target) for row in rows] == [("c4", "loss")] * 2 + [("c4", TARGET)] * 2 + [
        ("rpj", "loss")] * 2 + [("rpj", TARGET)] * 2
    assert {row.run for row in rows} == {"c4-1.4e+09-640", "c4-6.9e+09-20", "rpj-1.4e+09-640", "rpj-6.9e+09-20"}
    assert {row.law for row in rows} == {"overtraining", "chain"}
    for row in rows:  # every method fits the exact laws, so predicts the held-out runs almost exactly
        assert row.baselines["study"] == pytest.approx(row.true, rel=1e-4)
        assert row.baselines["all_runs"] == pytest.approx(row.true, rel=1e-4)
        assert row.predicted == pytest.approx(row.true, rel=2e-3)
    summary = summarise(rows)
    assert set(summary["targets"]["loss"]) >= {"transferlab", "study", "all_runs"}
    assert summary["mean_mre"]["study"] < 1e-4 and summary["n"] == 8


def test_a_series_with_nothing_left_to_fit_is_named():
    runs = made_up_study("c4")[:3]
    with pytest.raises(UserError, match=r"t.csv \(data c4\): 3 runs, 3 to hold out; nothing is left to fit"):
        backtest_overtraining(runs, ["loss"], 3, bootstrap=0, table="t.csv")
