"""Backtesting `predict` on finished runs: fit the small runs, predict the large ones, compare with a log-log line.

A table of runs in several series (e.g. one per pretraining dataset) is split per series by compute: the runs below
`threshold` are fitted, the runs at or above it are predicted, per target, exactly as `transferlab predict TABLE
--target TARGET --holdout K` does (K = the number of runs above the threshold, which must be the runs with the most
`flops`). Beside transferlab's prediction and interval, each held-out run gets the predictions of two baselines fitted
on the same runs, both the power law in compute Err = β·C^α of Cherti et al. 2023 ("Reproducible scaling laws for
contrastive language-image learning", Sec. 3), fitted by least squares on (log₁₀ C, log₁₀ Err):

- `pareto`: the study's own fit (`binned_line_fit` in its figures.ipynb): the log₁₀ C range of the fitted runs cut
  into `PARETO_BINS` equal bins, the lowest error of each non-empty bin placed at the bin's centre, a line through
  those points;
- `loglog`: the same line through every fitted run.

`summarise` gives per target the mean absolute and relative error of each method (transferlab and the rows'
baselines) and the share of held-out runs inside transferlab's interval, and over targets the mean of the
per-target mean relative errors and the pooled coverage. Errors are those of the metric as reported (an
accuracy, not 1 − accuracy).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from transferlab.errors import UserError
from transferlab.predict.command import as_error, predict_table
from transferlab.predict.scaling import ScalingExtrapolationWarning

PARETO_BINS = 5


@dataclass(frozen=True)
class HeldOutRun:
    """One held-out run of one target: the truth, transferlab's prediction and interval, the baselines'."""

    series: str
    target: str
    run: str
    true: float
    predicted: float
    low: float
    high: float
    extrapolation: float
    law: str
    baselines: dict[str, float] = field(default_factory=dict)


def backtest(runs: Sequence[dict[str, Any]], targets: Sequence[str], threshold: float, *, compute: str = "gmacs_total",
             series: str = "data", x: str = "flops", bootstrap: int = 200, seed: int = 0,
             table: str | Path = "runs table") -> list[HeldOutRun]:
    """Every held-out run of every series and target (series in order of first appearance, then targets)."""
    rows = []
    for name, members in by_series(runs, series).items():
        holdout = _holdout(members, threshold, compute, x, f"{table} ({series} {name})")
        for target in targets:
            rows += _one(members, name, target, holdout, x, bootstrap, seed, table)
    return rows


def by_series(runs: Sequence[dict[str, Any]], series: str) -> dict[str, list[dict[str, Any]]]:
    """The runs grouped by their value of the column `series` (as text), groups in order of first appearance."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault(str(run.get(series)), []).append(run)
    return groups


def summarise(rows: Sequence[HeldOutRun]) -> dict[str, Any]:
    """Per target and over all targets: mean absolute and relative error per method, transferlab's coverage."""
    methods = ("transferlab", *dict.fromkeys(name for row in rows for name in row.baselines))
    per_target = {}
    for target in dict.fromkeys(row.target for row in rows):
        members = [row for row in rows if row.target == target]
        truth = np.array([row.true for row in members])
        entry: dict[str, Any] = {"n": len(members), "laws": sorted({row.law for row in members})}
        for method in methods:
            predicted = np.array([_value(row, method) for row in members])
            entry[method] = {"mae": float(np.mean(np.abs(predicted - truth))),
                             "mre": float(np.mean(np.abs(predicted - truth) / truth))}
        entry["coverage"] = float(np.mean([row.low <= row.true <= row.high for row in members]))
        per_target[target] = entry
    overall = {method: float(np.mean([entry[method]["mre"] for entry in per_target.values()])) for method in methods}
    coverage = float(np.mean([row.low <= row.true <= row.high for row in rows])) if rows else math.nan
    return {"targets": per_target, "mean_mre": overall, "coverage": coverage, "n": len(rows)}


def pareto_line_fit(log_c: np.ndarray, log_error: np.ndarray, bins: int = PARETO_BINS) -> tuple[float, float]:
    """(slope, intercept) of the least-squares line through the lowest error of each of `bins` equal bins of log C,
    each placed at its bin's centre (the last bin's edge is pushed out by 0.1 so the largest run falls in it, as in
    the study's code)."""
    edges = np.linspace(log_c.min(), log_c.max() + 0.1, bins + 1)
    which = np.digitize(log_c, edges)
    centres, lowest = [], []
    for b in range(1, bins + 1):
        if np.any(which == b):
            centres.append((edges[b - 1] + edges[b]) / 2)
            lowest.append(log_error[which == b].min())
    return line_fit(np.array(centres), np.array(lowest))


def line_fit(log_c: np.ndarray, log_error: np.ndarray) -> tuple[float, float]:
    """(slope, intercept) of the least-squares line through the points."""
    slope, intercept = np.polyfit(log_c, log_error, 1)
    return float(slope), float(intercept)


def _holdout(runs: list[dict[str, Any]], threshold: float, compute: str, x: str, where: str) -> int:
    """How many runs lie at or above the threshold; they must be the runs with the most `x` for --holdout to hold
    them out."""
    above = [run for run in runs if _float(run, compute, where) >= threshold]
    below = [run for run in runs if _float(run, compute, where) < threshold]
    if not above or len(below) < 2:
        raise UserError(f"{where}: {len(below)} run(s) lie below {compute} = {threshold:g} and {len(above)} above; a "
                        f"backtest needs runs on both sides (at least 2 to fit).")
    if min(_float(run, x, where) for run in above) <= max(_float(run, x, where) for run in below):
        raise UserError(f"{where}: a run below the {compute} threshold has more {x} than one above it, so the split "
                        f"is not 'the K runs with the most {x}'; choose a threshold in {compute} that orders the "
                        f"same way as {x}.")
    return len(above)


def _one(runs: list[dict[str, Any]], series: str, target: str, holdout: int, x: str, bootstrap: int, seed: int,
         table: str | Path) -> list[HeldOutRun]:
    table_runs = [{"run": run.get("run"), x: run.get(x), target: run.get(target)} for run in runs]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ScalingExtrapolationWarning)
        record = predict_table(table_runs, target, None, x, holdout, [], table=table, bootstrap=bootstrap, seed=seed)
    order = np.argsort([run[x] for run in table_runs], kind="stable")
    fitted = [table_runs[i] for i in order[:-holdout]]
    log_c = np.log10([run[x] for run in fitted])
    error = np.array([error_of(run[target], target) for run in fitted])
    fits = {"pareto": pareto_line_fit(log_c, np.log10(error)), "loglog": line_fit(log_c, np.log10(error))}
    by_name = {str(run["run"]): run for run in table_runs}
    rows = []
    for row in record["held_out"]:
        log_x = math.log10(by_name[row["run"]][x])
        baselines = {name: metric_of(10 ** (slope * log_x + intercept), target) for name, (slope, intercept)
                     in fits.items()}
        rows.append(HeldOutRun(series, target, row["run"], row["true"], row["predicted"], row["low"], row["high"],
                               row["extrapolation"], record["law"], baselines))
    return rows


def error_of(metric: float, target: str) -> float:
    """The error a metric is fitted as (1 − an accuracy-like metric; a loss as it is)."""
    return 1 - metric if as_error(target) else metric


def metric_of(error: float, target: str) -> float:
    """The metric of a fitted error (the inverse of `error_of`)."""
    return 1 - error if as_error(target) else error


def _value(row: HeldOutRun, method: str) -> float:
    return row.predicted if method == "transferlab" else row.baselines[method]


def _float(run: dict[str, Any], column: str, where: str) -> float:
    value = run.get(column)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise UserError(f"{where}: run '{run.get('run')}' has {value!r} in column '{column}', which must be a finite "
                        f"number.")
    return float(value)
