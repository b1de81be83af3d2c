"""`transferlab predict RUNS --target METRIC`: fit a scaling law to a table of runs and predict other runs.

RUNS is a CSV/TSV/JSONL table, one run per row (transferlab's own runs add themselves to
`<out>/../runs.jsonl`, train/run_summary.py). The target is a column: the training `loss`, or a downstream
metric such as `linear_probe/digits/acc1`. Accuracy-like metrics (ending in acc1, acc5, recall, precision, nmi,
ari or a few-shot score, with or without an @k) are fitted as errors, 1 − metric, which is what the laws describe;
predictions are reported back in the metric's own units, clipped to [0, 1] (and marked `clipped` when the law's
value left it).

Laws (predict/scaling.py), and the default when `--law` is not given, chosen from the columns present:
- `chain` (default for a metric when the table has `params`, `samples` and `loss`): loss L(N, D) by the
  over-training law, then error(L) by the exponential law; a run is predicted from its N and D alone.
- `overtraining` (default for the target `loss` when the table has `params` and `samples`): the loss law alone.
- `power`: the target (as an error) as a saturating power law E + A·x^−α of one column, `--x` (default `flops`).
- `loglog`: the plain power law A·x^−α of `--x`, a line on a log-log plot.
- `auto` (default otherwise, e.g. a published table of compute and metrics): `power` or `loglog`, whichever
  predicted the largest fitted runs better from the smaller ones (predict/selection.py); the record says which
  and why.

`--holdout K` leaves the K runs with the most compute (`flops`, else 6·N·D, else `--x`) out of the fit and
reports the error of their predictions; `--at` predicts runs that do not exist yet. Every column the fit needs is
checked in every run, in file order, before anything is fitted, so a message names the run as the table has it.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from transferlab.errors import UserError
from transferlab.fileio import atomic_write
from transferlab.predict.plots import plot_fit
from transferlab.predict.runs_table import load_runs, numeric_column, require_columns, run_label, select_runs
from transferlab.predict.scaling import (
    ExponentialErrorLaw,
    OvertrainingLaw,
    PowerLaw,
    SaturatingPowerLaw,
    ScalingExtrapolationWarning,
    chain_predict,
    fit_report,
)
from transferlab.predict.selection import choose_compute_law

ACCURACY_LIKE = ("acc1", "acc5", "recall", "precision", "nmi", "ari", "shot")
LAW_NAMES = ("auto", "chain", "overtraining", "power", "loglog")
ONE_INPUT = {"power": SaturatingPowerLaw, "loglog": PowerLaw}


@dataclass
class _Fit:
    """What the plot needs: the law used, the fitted laws, every run's values of the needed columns, the split."""

    law: str
    laws: dict
    data: dict[str, np.ndarray]
    fitted: np.ndarray
    held: np.ndarray


def as_error(target: str) -> bool:
    """Whether the target is an accuracy-like metric, fitted as 1 − metric."""
    return target != "loss" and re.sub(r"@\d+$", "", target.split("/")[-1]).endswith(ACCURACY_LIKE)


def predict_runs(table: Path, target: str, law: str | None, x: str, holdout: int, at: list[str], out: Path,
                 bootstrap: int = 200, seed: int = 0, where: Sequence[str] = ()) -> dict:
    """Fit the runs of `table` that meet every `where` condition (COLUMN=VALUE), predict the held-out runs and the
    `at` points, write OUT/predict.json and OUT/fit.png; the record."""
    runs = select_runs(load_runs(table), where, table)
    record, fit = _fit_and_predict(runs, table, target, law, x, holdout, at, bootstrap, seed)
    record["where"] = list(where)
    out.mkdir(parents=True, exist_ok=True)
    record["plot"] = str(_plot(fit, target, x, out / "fit.png"))
    atomic_write(out / "predict.json", json.dumps(record, indent=1))
    return record


def predict_table(runs: list[dict[str, Any]], target: str, law: str | None, x: str, holdout: int, at: list[str], *,
                  table: str | Path = "runs table", bootstrap: int = 200, seed: int = 0) -> dict:
    """`predict_runs` on runs already read (`table` names them in messages), without writing files."""
    return _fit_and_predict(runs, table, target, law, x, holdout, at, bootstrap, seed)[0]


def _fit_and_predict(runs: list[dict], table: str | Path, target: str, law: str | None, x: str, holdout: int,
                     at: list[str], bootstrap: int, seed: int) -> tuple[dict, _Fit]:
    law, rule = _law_for(runs, target, law, x, table)
    inputs = [x] if law in ("auto", *ONE_INPUT) else ["params", "samples"]
    needed = list(dict.fromkeys(inputs + [target] + (["loss"] if law == "chain" else [])))
    require_columns(runs, needed, table)
    data = {name: numeric_column(runs, name, table) for name in needed}
    _check_values(runs, data, inputs, target, table)
    fitted, held = _split(runs, data, inputs, holdout, table)
    y = _target(data[target], target)
    record: dict[str, Any] = {"table": str(table), "target": target, "law": law, "law_choice": {"rule": rule},
                              "fitted_as": "error" if as_error(target) else "value", "runs_fitted": len(fitted),
                              "held_out": [], "at": []}
    if law == "auto":
        choice = choose_compute_law(data[x][fitted], y[fitted], x)
        law = record["law"] = choice.law
        record["law_choice"].update(choice.to_dict())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ScalingExtrapolationWarning)
        laws = _fit(law, data, y, fitted, target, x, bootstrap, seed)
        record["fit"] = {name: fit_report(fitted_law) for name, fitted_law in laws.items()}
        if len(held):
            prediction = _predict(law, laws, {name: data[name][held] for name in inputs})
            names = [str(runs[i]["run"]) if runs[i].get("run") is not None else f"run {i + 1}" for i in held]
            record["held_out"] = _rows(names, target, prediction, data[target][held])
        if at:
            points = _points(at, inputs)
            names = [", ".join(f"{k}={points[k][i]:g}" for k in inputs) for i in range(len(at))]
            record["at"] = _rows(names, target, _predict(law, laws, points), None)
    record["warnings"] = sorted({str(w.message) for w in caught if issubclass(w.category, UserWarning)})
    return record, _Fit(law, laws, data, fitted, held)


def _law_for(runs: list[dict], target: str, law: str | None, x: str, table: str | Path) -> tuple[str, str]:
    """The law to fit and the rule that chose it: the one asked for, else the one the columns present allow."""
    if law is not None:
        if law not in LAW_NAMES:
            raise UserError(f"--law must be one of {', '.join(LAW_NAMES)}, not '{law}'.")
        if law == "overtraining" and target != "loss":
            raise UserError(f"The over-training law models the training loss; use --target loss with it, or --law "
                            f"chain to predict '{target}'.")
        return law, f"--law {law}"
    present = {name for run in runs for name, value in run.items() if value is not None}
    if target == "loss" and {"params", "samples"} <= present:
        return "overtraining", "the target is the loss and the table has params and samples: the over-training law"
    if target != "loss" and {"params", "samples", "loss"} <= present:
        return "chain", "the table has params, samples and loss: the loss law, then the error law (chain)"
    if x in present:
        return "auto", (f"the table has no params, samples and loss together, but has '{x}': a law of {x} alone, the "
                        f"form chosen by predicting the table's largest runs from its smaller ones")
    raise UserError(f"The runs table {table} has neither 'params', 'samples' and 'loss' (for the chain of the loss "
                    f"law and the error law) nor a compute column '{x}' (for a law of one input; name another column "
                    f"with --x). Its columns are: {', '.join(repr(name) for name in sorted(present)) or 'none'}. "
                    f"Add or rename columns, e.g. 'flops' for each run's training compute.")


def _check_values(runs: list[dict], data: dict[str, np.ndarray], inputs: list[str], target: str,
                  table: str | Path) -> None:
    """Inputs > 0 (their logs are taken), an accuracy-like target in [0, 1), another target > 0, no run twice."""
    for name in [*inputs, "loss"] if "loss" in data else inputs:
        bad = np.flatnonzero(data[name] <= 0)
        if bad.size:
            i = bad[0]
            raise UserError(f"{run_label(runs[i], i, capital=True)} of the runs table {table} has {name} = "
                            f"{data[name][i]:g}; the fit takes its logarithm, so it must be > 0. Fix that run or "
                            f"leave it out.")
    values = data[target]
    bad = np.flatnonzero((values < 0) | (values >= 1) if as_error(target) else values <= 0)
    if bad.size:
        i = bad[0]
        needed = ("a fraction in [0, 1), fitted as the error 1 - metric, whose logarithm must exist (a perfect score "
                  "has none; a percentage must be divided by 100)") if as_error(target) else "> 0 (its log is fitted)"
        raise UserError(f"{run_label(runs[i], i, capital=True)} of the runs table {table} has {target} = "
                        f"{values[i]:g}; it must be {needed}. Fix that run or leave it out.")
    _check_duplicates(runs, table)


def _check_duplicates(runs: list[dict], table: str | Path) -> None:
    named = "run" in {name for run in runs for name in run}
    first: dict[Any, int] = {}
    for i, run in enumerate(runs):
        key = run.get("run") if named else json.dumps(run, sort_keys=True, default=str)
        if named and key is None:
            continue
        if key in first:
            what = f"both named '{key}'" if named else "identical in every column"
            raise UserError(f"Runs {first[key] + 1} and {i + 1} of the runs table {table} are {what}: the same run "
                            f"listed twice would count twice in the fit. Remove one of them (or, for two runs that "
                            f"differ, give them different names).")
        first[key] = i


def _split(runs: list[dict], data: dict[str, np.ndarray], inputs: list[str], holdout: int,
           table: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the fitted and the held-out runs (the `holdout` runs with the most compute)."""
    if holdout < 0 or holdout >= len(runs):
        raise UserError(f"--holdout {holdout} must leave runs to fit: {table} has {len(runs)} runs.")
    if len(runs) - holdout < 2:
        raise UserError(f"The runs table {table} leaves {len(runs) - holdout} run to fit (it has {len(runs)}, "
                        f"--holdout {holdout}); a scaling law is fitted to several runs at different scales. Add runs "
                        f"or hold fewer out.")
    order = np.argsort(_compute(runs, data, inputs, table), kind="stable")
    return np.sort(order[:len(runs) - holdout]), order[len(runs) - holdout:]


def _compute(runs: list[dict], data: dict[str, np.ndarray], inputs: list[str], table: str | Path) -> np.ndarray:
    if all(run.get("flops") is not None for run in runs):
        return numeric_column(runs, "flops", table)
    if inputs == ["params", "samples"]:
        return 6 * data["params"] * data["samples"]
    return data[inputs[0]]


def _target(values: np.ndarray, target: str) -> np.ndarray:
    return 1 - values if as_error(target) else values


def _fit(law: str, data: dict[str, np.ndarray], y: np.ndarray, fitted: np.ndarray, target: str, x: str,
         bootstrap: int, seed: int) -> dict:
    if law in ONE_INPUT:
        name = f"1 - {target}" if as_error(target) else target
        return {law: ONE_INPUT[law](x_name=x, y_name=name).fit(data[x][fitted], y[fitted], n_bootstrap=bootstrap,
                                                               seed=seed)}
    N, D, y = data["params"][fitted], data["samples"][fitted], y[fitted]
    loss_law = OvertrainingLaw().fit(N, D, data["loss"][fitted], n_bootstrap=bootstrap, seed=seed)
    if law == "overtraining":
        return {"loss": loss_law}
    return {"loss": loss_law, "error": ExponentialErrorLaw().fit(data["loss"][fitted], y, n_bootstrap=bootstrap,
                                                                 seed=seed)}


def _predict(law: str, laws: dict, inputs: dict[str, np.ndarray]):
    if law in ONE_INPUT:
        return laws[law].predict(next(iter(inputs.values())))
    N, D = inputs["params"], inputs["samples"]
    return laws["loss"].predict(N, D) if law == "overtraining" else chain_predict(laws["loss"], laws["error"], N, D)


def _rows(names: list[str], target: str, prediction, truth: np.ndarray | None) -> list[dict]:
    """One dict per predicted run, in the target's own units (an accuracy's interval flips with 1 − error)."""
    value, low, high = prediction.value, prediction.low, prediction.high
    clipped = np.zeros(len(value), dtype=bool)
    if as_error(target):  # an extrapolated error law can leave [0, 1]; the metric cannot
        clipped = (value < 0) | (value > 1)
        value, low, high = (np.clip(1 - v, 0, 1) for v in (value, high, low))
    rows = []
    for i, name in enumerate(names):
        row = {"run": name, "predicted": float(value[i]), "low": float(low[i]), "high": float(high[i]),
               "extrapolation": float(prediction.extrapolation[i]), "clipped": bool(clipped[i])}
        if truth is not None:
            row.update(true=float(truth[i]), relative_error=float(abs(value[i] - truth[i]) / abs(truth[i]))
                       if truth[i] else None)
        rows.append(row)
    return rows


def _points(at: list[str], inputs: list[str]) -> dict[str, np.ndarray]:
    rows = []
    for item in at:
        try:
            values = [float(part) for part in item.split(",")]
        except ValueError:
            values = []
        if len(values) != len(inputs):
            raise UserError(f"--at '{item}' must give {','.join(inputs)} as {len(inputs)} comma-separated "
                            f"number(s), e.g. --at {','.join('1e6' for _ in inputs)}.")
        rows.append(values)
    return {name: np.array([row[i] for row in rows]) for i, name in enumerate(inputs)}


def _plot(fit: _Fit, target: str, x: str, path: Path) -> Path:
    """The fit and its extrapolation: the metric's law of one input, else the error (or loss) law of the chain."""
    y = _target(fit.data[target], target)
    if fit.law in ONE_INPUT:
        law, inputs = fit.laws[fit.law], lambda rows: fit.data[x][rows]
    elif fit.law == "overtraining":
        law, inputs = fit.laws["loss"], lambda rows: (fit.data["params"][rows], fit.data["samples"][rows])
    else:
        law, inputs = fit.laws["error"], lambda rows: fit.data["loss"][rows]
    held = len(fit.held) > 0
    return plot_fit(law, inputs(fit.fitted), y[fit.fitted], inputs(fit.held) if held else None,
                    y[fit.held] if held else None, path=path)
