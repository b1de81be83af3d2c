"""Choosing a law of one input (compute) for a table by how well each would have predicted its own largest runs.

A saturating power law E + A·x^(−α) can bend where a plain power law A·x^(−α) cannot, and pays for it with a third
parameter fitted on a handful of runs; which of the two extrapolates better depends on the runs. So the choice is
made on the runs at hand, the way the law will be used (leave-largest-out, a backtest): for k = 1 … K, each form is
fitted on the runs without the k with the most x and predicts those k; its score is the mean |log ŷ − log y| over all
these m = K(K + 1)/2 predictions. K = min(n − 4, max(1, n // 3)) for n runs at distinct x: every fit keeps the 4 runs
the saturating law needs, and at most a third of the runs are held out.

The simpler law is kept unless the other is better by more than the noise of the comparison: the one-standard-error
rule (Breiman et al. 1984, "Classification and Regression Trees", Sec. 3.4.3; Hastie, Tibshirani & Friedman 2009,
"The Elements of Statistical Learning", Sec. 7.10): the simplest law whose score is within one standard error of
the best score, the standard error being that of the best law's m held-out errors. With fewer than 2 held-out
predictions (n < 6) there is no standard error and the simpler law is used; with fewer than `MIN_RUNS` runs nothing
can be held out. (On the published study's runs below its test threshold, predicting the two largest of seven runs
from the other five, a lowest-score rule chose the saturating law for 96 of 120 targets, on one held-out run each,
and erred more than the plain law would have; docs/prediction.md.)
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

from transferlab.predict.scaling import PowerLaw, SaturatingPowerLaw, ScalingExtrapolationWarning

CANDIDATES = {"loglog": PowerLaw, "power": SaturatingPowerLaw}  # simplest first
MIN_RUNS = 5


@dataclass(frozen=True)
class Choice:
    """The chosen form, each candidate's leave-largest-out score (None when not scored), the standard error the
    choice allowed for, and why, in words."""

    law: str
    scores: dict[str, float | None]
    standard_error: float | None
    folds: int
    reason: str

    def to_dict(self) -> dict:
        return {"law": self.law, "scores": self.scores, "standard_error": self.standard_error, "folds": self.folds,
                "reason": self.reason}


def choose_compute_law(x: np.ndarray, y: np.ndarray, x_name: str = "x") -> Choice:
    """The candidate (a key of CANDIDATES) to fit to (x, y), chosen by predicting the largest runs from the others."""
    order = np.argsort(x, kind="stable")
    x, y = np.asarray(x, dtype=float)[order], np.asarray(y, dtype=float)[order]
    n = len(np.unique(x))
    simplest = next(iter(CANDIDATES))
    if n < MIN_RUNS:
        return Choice(simplest, dict.fromkeys(CANDIDATES), None, 0,
                      f"{n} runs at distinct {x_name} are too few to compare laws by predicting the largest from the "
                      f"others ({MIN_RUNS} are needed); the simpler law is used")
    folds = min(n - 4, max(1, n // 3))
    errors = {name: _held_out_errors(law, x, y, folds) for name, law in CANDIDATES.items()}
    scores = {name: float(np.mean(values)) for name, values in errors.items()}
    best = min(scores, key=lambda name: scores[name])
    m = len(errors[best])
    se = float(np.std(errors[best], ddof=1) / math.sqrt(m)) if m > 1 else None
    law = simplest if se is None else next(name for name in CANDIDATES if scores[name] <= scores[best] + se)
    shown = ", ".join(f"{name} {score:.3g}" for name, score in scores.items())
    how = (f"fitted without the 1 to {folds} runs with the most {x_name}, mean |log predicted - log true| over the "
           f"{m} held out: {shown}")
    if se is None:
        reason = f"{law}: one held-out run cannot tell the laws apart ({how}); the simpler law is used"
    elif law == best:
        reason = f"{law} predicted the largest runs best from the smaller ones ({how}; standard error {se:.2g})"
    else:
        reason = (f"{law}, the simpler law, predicted the largest runs within one standard error ({se:.2g}) of the "
                  f"best ({how})")
    return Choice(law, scores, se, folds, reason)


def _held_out_errors(law: type, x: np.ndarray, y: np.ndarray, folds: int) -> np.ndarray:
    errors = []
    for k in range(1, folds + 1):
        fitted = law().fit(x[:-k], y[:-k], n_bootstrap=0)
        with warnings.catch_warnings():  # predicting beyond the fitted runs is the point here
            warnings.simplefilter("ignore", ScalingExtrapolationWarning)
            predicted = fitted.predict(x[-k:], interval="law").value
        errors.extend(np.abs(np.log(predicted) - np.log(y[-k:])))
    return np.array(errors)
