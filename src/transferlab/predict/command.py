"""`transferlab predict RUNS --target METRIC`: fit a scaling law to a table of runs and predict other runs.

RUNS is a CSV/TSV/JSONL table, one run per row (transferlab's own runs add themselves to
`<out>/../runs.jsonl`, train/run_summary.py). The target is a column: the training `loss`, or a downstream
metric such as `linear_probe/digits/acc1`. Accuracy-like metrics (ending in acc1, acc5, recall, nmi, ari or
a few-shot score) are fitted as errors, 1 − metric, which is what the laws describe; predictions are
reported back in the metric's own units, clipped to [0, 1] (and marked `clipped` when the law's value
left it).

Laws (predict/scaling.py):
- `chain` (default for downstream metrics): loss L(N, D) by the over-training law from `params` and
  `samples`, then error(L) by the exponential law; a run is predicted from its N and D alone.
- `power`: the metric's error as a saturating power law of one column, `--x` (default `flops`).
- `overtraining` (default for the target `loss`): the loss law alone.

`--holdout K` leaves the K runs with the most compute (`flops`, else 6·N·D) out of the fit and reports
the relative error of their predictions; `--at` predicts runs that do not exist yet.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np

from transferlab.errors import UserError
from transferlab.fileio import atomic_write
from transferlab.predict.plots import plot_fit
from transferlab.predict.runs_table import load_runs, numeric_column, require_columns
from transferlab.predict.scaling import (
    ExponentialErrorLaw,
    OvertrainingLaw,
    SaturatingPowerLaw,
    ScalingExtrapolationWarning,
    chain_predict,
    fit_report,
)

ACCURACY_LIKE = ("acc1", "acc5", "recall", "nmi", "ari", "shot")
LAW_NAMES = ("chain", "power", "overtraining")


def as_error(target: str) -> bool:
    """Whether the target is an accuracy-like metric, fitted as 1 − metric."""
    return target != "loss" and target.split("/")[-1].endswith(ACCURACY_LIKE)


def predict_runs(table: Path, target: str, law: str | None, x: str, holdout: int, at: list[str], out: Path,
                 bootstrap: int = 200, seed: int = 0) -> dict:
    """Fit, predict the held-out runs and the `at` points, write OUT/predict.json and OUT/fit.png; the record."""
    law = law or ("overtraining" if target == "loss" else "chain")
    if law not in LAW_NAMES:
        raise UserError(f"--law must be one of {', '.join(LAW_NAMES)}, not '{law}'.")
    if law == "overtraining" and target != "loss":
        raise UserError(f"The over-training law models the training loss; use --target loss with it, or --law chain "
                        f"to predict '{target}'.")
    runs = load_runs(table)
    inputs = [x] if law == "power" else ["params", "samples"]
    require_columns(runs, inputs + [target] + (["loss"] if law == "chain" else []), table)
    fitted, held = _split(runs, holdout, table)
    record = {"table": str(table), "target": target, "law": law, "fitted_as": "error" if as_error(target) else
              "value", "runs_fitted": len(fitted), "held_out": [], "at": []}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ScalingExtrapolationWarning)
        laws = _fit(law, fitted, target, x, table, bootstrap, seed)
        record["fit"] = {name: fit_report(fitted_law) for name, fitted_law in laws.items()}
        if held:
            prediction = _predict(law, laws, {name: numeric_column(held, name, table) for name in inputs})
            names = [str(run.get("run", f"held-out run {i + 1}")) for i, run in enumerate(held)]
            record["held_out"] = _rows(names, target, prediction, numeric_column(held, target, table))
        if at:
            points = _points(at, inputs)
            names = [", ".join(f"{k}={points[k][i]:g}" for k in inputs) for i in range(len(at))]
            record["at"] = _rows(names, target, _predict(law, laws, points), None)
    record["warnings"] = sorted({str(w.message) for w in caught if issubclass(w.category, UserWarning)})
    out.mkdir(parents=True, exist_ok=True)
    record["plot"] = str(_plot(law, laws, fitted, held, target, x, table, out / "fit.png"))
    atomic_write(out / "predict.json", json.dumps(record, indent=1))
    return record


def _split(runs: list[dict], holdout: int, table: Path) -> tuple[list[dict], list[dict]]:
    if holdout < 0 or holdout >= len(runs):
        raise UserError(f"--holdout {holdout} must leave runs to fit: {table} has {len(runs)} runs.")
    if not holdout:
        return runs, []
    if all(run.get("flops") is not None for run in runs):
        compute = numeric_column(runs, "flops", table)
    else:
        compute = 6 * numeric_column(runs, "params", table) * numeric_column(runs, "samples", table)
    order = np.argsort(compute, kind="stable")
    return [runs[i] for i in order[:-holdout]], [runs[i] for i in order[-holdout:]]


def _target(runs: list[dict], target: str, table: Path) -> np.ndarray:
    values = numeric_column(runs, target, table)
    return 1 - values if as_error(target) else values


def _fit(law: str, runs: list[dict], target: str, x: str, table: Path, bootstrap: int, seed: int) -> dict:
    y = _target(runs, target, table)
    if law == "power":
        name = f"1 - {target}" if as_error(target) else target
        return {"power": SaturatingPowerLaw(x_name=x, y_name=name).fit(numeric_column(runs, x, table), y,
                                                                          n_bootstrap=bootstrap, seed=seed)}
    N, D = numeric_column(runs, "params", table), numeric_column(runs, "samples", table)
    loss_law = OvertrainingLaw().fit(N, D, numeric_column(runs, "loss", table), n_bootstrap=bootstrap, seed=seed)
    if law == "overtraining":
        return {"loss": loss_law}
    return {"loss": loss_law, "error": ExponentialErrorLaw().fit(numeric_column(runs, "loss", table), y,
                                                                 n_bootstrap=bootstrap, seed=seed)}


def _predict(law: str, laws: dict, inputs: dict[str, np.ndarray]):
    if law == "power":
        return laws["power"].predict(next(iter(inputs.values())))
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


def _plot(law: str, laws: dict, fitted: list[dict], held: list[dict], target: str, x: str, table: Path,
          path: Path) -> Path:
    """The fit and its extrapolation: the metric's law for power, else the error (or loss) law of the chain."""
    if law == "power":
        xs, held_xs = (numeric_column(runs, x, table) if runs else None for runs in (fitted, held))
        return plot_fit(laws["power"], xs, _target(fitted, target, table), held_xs,
                        _target(held, target, table) if held else None, path=path)
    if law == "overtraining":
        pairs = [(numeric_column(r, "params", table), numeric_column(r, "samples", table)) if r else None
                 for r in (fitted, held)]
        return plot_fit(laws["loss"], pairs[0], _target(fitted, target, table), pairs[1],
                        _target(held, target, table) if held else None, path=path)
    losses = [numeric_column(runs, "loss", table) if runs else None for runs in (fitted, held)]
    return plot_fit(laws["error"], losses[0], _target(fitted, target, table), losses[1],
                    _target(held, target, table) if held else None, path=path)
