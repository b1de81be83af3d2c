"""Choosing a law of one input (compute) for a table by how well each would have predicted its own largest runs.

A saturating power law E + A·x^(−α) can bend where a plain power law A·x^(−α) cannot, and pays for it with a third
parameter fitted on a handful of runs; which of the two extrapolates better depends on the runs. So the choice is
made on the runs at hand, the way the law will be used (leave-largest-out, a backtest): for k = 1 … K, each form is
fitted on the runs without the k with the most x and predicts those k; its score is the mean |log ŷ − log y| over all
these predictions. The form with the lower score is chosen; on a tie, or when there are too few runs to hold any
out (fewer than `MIN_RUNS`), the plain power law, the simpler of the two. K = min(n − 4, max(1, n // 3)): every fit
keeps the 4 runs the saturating law needs, and at most a third of the runs are held out.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from transferlab.predict.scaling import PowerLaw, SaturatingPowerLaw, ScalingExtrapolationWarning

CANDIDATES = {"loglog": PowerLaw, "power": SaturatingPowerLaw}  # simplest first: it wins ties
MIN_RUNS = 5


@dataclass(frozen=True)
class Choice:
    """The chosen form, each candidate's leave-largest-out score (None when not scored), and why, in words."""

    law: str
    scores: dict[str, float | None]
    folds: int
    reason: str

    def to_dict(self) -> dict:
        return {"law": self.law, "scores": self.scores, "folds": self.folds, "reason": self.reason}


def choose_compute_law(x: np.ndarray, y: np.ndarray, x_name: str = "x") -> Choice:
    """The candidate (a key of CANDIDATES) that best predicts the largest runs of (x, y) from the others."""
    order = np.argsort(x, kind="stable")
    x, y = np.asarray(x, dtype=float)[order], np.asarray(y, dtype=float)[order]
    n = len(np.unique(x))
    simplest = next(iter(CANDIDATES))
    if n < MIN_RUNS:
        return Choice(simplest, dict.fromkeys(CANDIDATES), 0,
                      f"{n} runs at distinct {x_name} are too few to compare laws by predicting the largest from the "
                      f"others ({MIN_RUNS} are needed); the simpler law is used")
    folds = min(n - 4, max(1, n // 3))
    scores = {name: _score(law, x, y, folds) for name, law in CANDIDATES.items()}
    best = min(scores, key=lambda name: scores[name])  # dicts keep order, so a tie goes to the simpler law
    shown = ", ".join(f"{name} {score:.3g}" for name, score in scores.items())
    return Choice(best, scores, folds,
                  f"{best} predicted the largest runs best from the smaller ones: fitted without the 1 to {folds} runs "
                  f"with the most {x_name}, mean |log predicted - log true| over those held out: {shown}")


def _score(law: type, x: np.ndarray, y: np.ndarray, folds: int) -> float:
    errors = []
    for k in range(1, folds + 1):
        fitted = law().fit(x[:-k], y[:-k], n_bootstrap=0)
        with warnings.catch_warnings():  # predicting beyond the fitted runs is the point here
            warnings.simplefilter("ignore", ScalingExtrapolationWarning)
            predicted = fitted.predict(x[-k:], interval="law").value
        errors.extend(np.abs(np.log(predicted) - np.log(y[-k:])))
    return float(np.mean(errors))
