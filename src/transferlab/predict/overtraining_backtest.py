"""Backtesting `predict` on a study of over-trained language models, against the study's own fit.

The study is Gadre et al. 2024, "Language models scale reliably with over-training and on downstream tasks"
(arXiv:2403.08540; its runs: `overtraining_study`). Per series (one training dataset), the `holdout` runs with the
most compute are predicted, for each target, exactly as `transferlab predict TABLE --target TARGET --holdout K` does
(the table has params, samples and loss: the `overtraining` law for the loss, the `chain` for an accuracy). Beside
transferlab's prediction and interval, each held-out run gets the predictions of the study's two laws fitted the
study's way (its Table 2 defaults, `fit_ds` in its scaling/shared.py), by least squares on the quantity itself:

    L(N, D) = E + A·N^(−α) + B·D^(−α)      (the loss, N parameters, D tokens; Chinchilla's form with α = β)
    Err(L)  = ε − k·exp(−γ·L)              (average top-1 error against the loss)

- `study`: the loss law over the study's 5 runs — the four smallest model sizes at M = D/N = 20 and the smallest at
  M = 320 — and the error law over those 5 and the fifth size at M = 20 (`study_runs`);
- `all_runs`: the same two laws, fitted the same way, over every fitted run.

`backtest.summarise` summarises the rows. Errors are those of the value as reported (the loss, or the accuracy).
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import least_squares

from transferlab.errors import UserError
from transferlab.predict.backtest import HeldOutRun, by_series, error_of, metric_of
from transferlab.predict.command import predict_table
from transferlab.predict.scaling import ScalingExtrapolationWarning

STUDY_MULTIPLIER = 20  # tokens per parameter of the study's fitted runs
STUDY_OVERTRAINED = 320  # the multiplier of its one over-trained fitted run (the smallest model)
LOSS_SIZES = 4  # model sizes the study's loss law is fitted on; its error law adds the next size


@dataclass(frozen=True)
class LossLaw:
    """L(N, D) = E + A·N^(−α) + B·D^(−α), fitted by least squares on L."""

    E: float
    A: float
    B: float
    alpha: float

    def __call__(self, N: np.ndarray, D: np.ndarray) -> np.ndarray:
        return self.E + self.A * np.power(N, -self.alpha) + self.B * np.power(D, -self.alpha)


@dataclass(frozen=True)
class ErrorLaw:
    """Err(L) = ε − k·exp(−γ·L), fitted by least squares on Err."""

    epsilon: float
    k: float
    gamma: float

    def __call__(self, loss: np.ndarray) -> np.ndarray:
        return self.epsilon - self.k * np.exp(-self.gamma * loss)


def fit_loss_law(N: np.ndarray, D: np.ndarray, loss: np.ndarray) -> LossLaw:
    """Least squares on the loss from a grid of starts, the lowest sum of squares kept. Inside the fit N and D are
    divided by their geometric means (the same law, better scaled): A and B are converted back."""
    N, D, loss = (np.asarray(v, dtype=float) for v in (N, D, loss))
    n0, d0 = math.exp(np.log(N).mean()), math.exp(np.log(D).mean())
    u, v = np.log(N / n0), np.log(D / d0)

    def residuals(theta: np.ndarray) -> np.ndarray:
        E, a, b, alpha = theta
        return E + np.exp(a - alpha * u) + np.exp(b - alpha * v) - loss

    spread = float(loss.max() - loss.min()) + 1e-3
    starts = itertools.product(loss.min() * np.array([0.0, 0.5, 0.8]), np.log(spread * np.array([0.1, 1.0])),
                               np.log(spread * np.array([0.1, 1.0])), (0.1, 0.3, 0.6))
    bounds = ([0.0, -30.0, -30.0, 1e-4], [float(loss.min()), 30.0, 30.0, 5.0])
    E, a, b, alpha = _best(residuals, starts, bounds)
    return LossLaw(float(E), math.exp(a) * n0 ** alpha, math.exp(b) * d0 ** alpha, float(alpha))


def fit_error_law(loss: np.ndarray, error: np.ndarray) -> ErrorLaw:
    """Least squares on the error from a grid of starts; k is fitted as log k relative to the smallest loss."""
    loss, error = np.asarray(loss, dtype=float), np.asarray(error, dtype=float)
    anchor = float(loss.min())

    def residuals(theta: np.ndarray) -> np.ndarray:
        epsilon, c, gamma = theta
        return epsilon - np.exp(c - gamma * (loss - anchor)) - error

    starts = ([eps, math.log(max(eps - error.max(), 1e-3)), gamma]
              for eps in error.max() + np.array([0.01, 0.1, 0.3]) for gamma in (0.1, 0.5, 1.0, 3.0))
    epsilon, c, gamma = _best(residuals, starts, ([0.0, -30.0, 1e-6], [10.0, 30.0, 100.0]))
    return ErrorLaw(float(epsilon), math.exp(c + gamma * anchor), float(gamma))


def study_runs(runs: Sequence[dict[str, Any]], where: str) -> tuple[list[int], list[int]]:
    """Indices of the runs the study fits its loss law on, and its error law on (see the module's docstring)."""
    sizes = sorted({float(run["params"]) for run in runs})
    if len(sizes) <= LOSS_SIZES:
        raise UserError(f"{where}: the study's fit needs {LOSS_SIZES + 1} model sizes among the fitted runs; there are "
                        f"{len(sizes)}.")

    def at(size: float, multiplier: int) -> int:
        found = [i for i, run in enumerate(runs) if float(run["params"]) == size
                 and math.isclose(float(run["multiplier"]), multiplier)]
        if len(found) != 1:
            raise UserError(f"{where}: the study's fit needs one run of {size:g} parameters at {multiplier} tokens "
                            f"per parameter; there are {len(found)}.")
        return found[0]

    loss_runs = [at(size, STUDY_MULTIPLIER) for size in sizes[:LOSS_SIZES]] + [at(sizes[0], STUDY_OVERTRAINED)]
    return loss_runs, loss_runs + [at(sizes[LOSS_SIZES], STUDY_MULTIPLIER)]


def backtest_overtraining(runs: Sequence[dict[str, Any]], targets: Sequence[str], holdout: int, *,
                          series: str = "data", bootstrap: int = 200, seed: int = 0,
                          table: str | Path = "runs table") -> list[HeldOutRun]:
    """Every held-out run of every series and target (series in order of first appearance, then targets)."""
    rows = []
    for name, group in by_series(runs, series).items():
        members = sorted(group, key=lambda run: run["flops"])
        if len(members) <= holdout:
            raise UserError(f"{table} ({series} {name}): {len(members)} runs, {holdout} to hold out; nothing is left "
                            f"to fit.")
        fitted, held = members[:-holdout], members[-holdout:]
        baselines = _baselines(fitted, f"{table} ({series} {name})")
        for target in targets:
            rows += _one(members, fitted, held, baselines, name, target, bootstrap, seed, table)
    return rows


def _baselines(fitted: list[dict[str, Any]], where: str) -> dict[str, tuple[LossLaw, list[int]]]:
    """Per baseline its fitted loss law and the runs (indices into `fitted`) its error law is fitted on."""
    loss_runs, error_runs = study_runs(fitted, where)
    N, D, loss = (np.array([run[key] for run in fitted], dtype=float) for key in ("params", "samples", "loss"))
    return {"study": (fit_loss_law(N[loss_runs], D[loss_runs], loss[loss_runs]), error_runs),
            "all_runs": (fit_loss_law(N, D, loss), list(range(len(fitted))))}


def _one(members: list[dict], fitted: list[dict], held: list[dict], baselines: dict, series: str, target: str,
         bootstrap: int, seed: int, table: str | Path) -> list[HeldOutRun]:
    columns = ("run", "params", "samples", "flops", "loss", target)
    table_runs = [{key: run.get(key) for key in columns} for run in members]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ScalingExtrapolationWarning)
        record = predict_table(table_runs, target, None, "flops", len(held), [], table=table, bootstrap=bootstrap,
                               seed=seed)
    N, D = (np.array([run[key] for run in held], dtype=float) for key in ("params", "samples"))
    fitted_loss = np.array([run["loss"] for run in fitted], dtype=float)
    fitted_error = np.array([error_of(run[target], target) for run in fitted])
    predictions = {}
    for name, (loss_law, error_runs) in baselines.items():
        loss = loss_law(N, D)
        if target == "loss":
            predictions[name] = loss
        else:
            error_law = fit_error_law(fitted_loss[error_runs], fitted_error[error_runs])
            predictions[name] = np.array([metric_of(e, target) for e in error_law(loss)])
    by_name = {str(run["run"]): i for i, run in enumerate(held)}
    return [HeldOutRun(series, target, row["run"], row["true"], row["predicted"], row["low"], row["high"],
                       row["extrapolation"], record["law"],
                       {name: float(values[by_name[row["run"]]]) for name, values in predictions.items()})
            for row in record["held_out"]]


def _best(residuals, starts, bounds) -> np.ndarray:
    """The least-squares optimum with the lowest sum of squares over the starts (each clipped into the bounds)."""
    low, high = np.array(bounds[0]), np.array(bounds[1])
    best, best_cost = None, math.inf
    for start in starts:
        start = np.clip(np.array(start, dtype=float), low + 1e-9, high - 1e-9)
        result = least_squares(residuals, start, bounds=(low, high), x_scale="jac", max_nfev=2000)
        if result.cost < best_cost:
            best, best_cost = result.x, result.cost
    return best

