"""transferlab's LinearProbe against scikit-learn's LogisticRegression on identical features and penalty.

Both minimise the same objective (mean cross-entropy + λ/2 ‖W‖², i.e. sklearn's C = 1/(λ n)). The
benchmark fits transferlab's probe, sklearn at its default tolerance (tol=1e-4) and sklearn at a tight
one (tol=1e-8, as tight as transferlab's default) on the train split of a bundled dataset's pixels, for
several λ, and prints one JSON line per (dataset, λ): test accuracies, the objective each reached (lower is
more exact), and the wall-time ratios sklearn / transferlab (above 1: transferlab is faster).

Then the whole validation sweep as `transferlab eval` runs it — a coarse grid of 7 penalties, 4 refined
around the best, the best refit on train + val — against LogisticRegression doing the same sweep at its
default tolerance: wall-time ratio and both test accuracies (the bar: ≥ 3x, within 0.5 point).

    python benchmarks/linear_probe_vs_sklearn.py
"""

from __future__ import annotations

import json
import time

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from transferlab.adapt.linear_probe import REFINE_STEPS, LinearProbe, probe_with_validation
from transferlab.config import Splits
from transferlab.data.readers.bundled import load_bundled
from transferlab.data.splits import split_indices

GRID = [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0]


def features(source: str) -> tuple[np.ndarray, ...]:
    data = load_bundled(source, source, size=16, channels=1)
    splits = split_indices(len(data), Splits(train=0.8, val=0.0, test=0.2), data.labels)
    x = data.images.flatten(1).double().numpy() / 255
    y = data.labels.numpy()
    return x[splits["train"]], y[splits["train"]], x[splits["test"]], y[splits["test"]]


def timed_fit(estimator, x: np.ndarray, y: np.ndarray) -> tuple[object, float]:
    start = time.perf_counter()
    estimator.fit(x, y)
    return estimator, time.perf_counter() - start


def objective(model, x: np.ndarray, y: np.ndarray, weight_decay: float) -> float:
    """Mean cross-entropy + λ/2 ‖W‖² of a fitted model (labels are 0..K-1 here)."""
    logits = x @ model.coef_.T + model.intercept_
    logits -= logits.max(axis=1, keepdims=True)
    log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    return float(-log_probs[np.arange(len(y)), y].mean() + 0.5 * weight_decay * (model.coef_ ** 2).sum())


def sklearn_sweep(train_x, train_y, val_x, val_y) -> LogisticRegression:
    """The same coarse-to-fine sweep with scikit-learn, each fit from scratch."""
    def fit(wd, x, y):
        return LogisticRegression(C=1 / (wd * len(x)), max_iter=1000).fit(x, y)

    scores = {wd: fit(wd, train_x, train_y).score(val_x, val_y) for wd in GRID}
    coarse = max(scores, key=lambda wd: (scores[wd], wd))
    refined = [coarse * 10 ** step for step in REFINE_STEPS]
    scores.update({wd: fit(wd, train_x, train_y).score(val_x, val_y) for wd in refined})
    best = max(scores, key=lambda wd: (scores[wd], wd))
    return fit(best, np.concatenate([train_x, val_x]), np.concatenate([train_y, val_y]))


def sweeps(source: str) -> dict:
    train_x, train_y, test_x, test_y = features(source)
    cut = int(0.85 * len(train_x))  # a validation split from the train split
    start = time.perf_counter()
    ours, _ = probe_with_validation(train_x[:cut], train_y[:cut], train_x[cut:], train_y[cut:], GRID)
    ours_s = time.perf_counter() - start
    start = time.perf_counter()
    theirs = sklearn_sweep(train_x[:cut], train_y[:cut], train_x[cut:], train_y[cut:])
    theirs_s = time.perf_counter() - start
    return {"benchmark": "linear_probe_sweep_vs_sklearn", "dataset": source, "penalties": len(GRID) + 4,
            "acc_transferlab": round(ours.score(test_x, test_y), 4),
            "acc_sklearn": round(theirs.score(test_x, test_y), 4),
            "speed_sklearn_over_transferlab": round(theirs_s / ours_s, 2)}


def main() -> None:
    torch.set_num_threads(1)  # both solvers on one core, the way sklearn's lbfgs runs
    for source in ("digits", "mnist5k"):
        train_x, train_y, test_x, test_y = features(source)
        for weight_decay in (1e-4, 1e-2):
            c = 1 / (weight_decay * len(train_x))
            fits = {"transferlab": timed_fit(LinearProbe(weight_decay, max_iter=5000), train_x, train_y),
                    "sklearn": timed_fit(LogisticRegression(C=c, max_iter=5000), train_x, train_y),
                    "sklearn_tight": timed_fit(LogisticRegression(C=c, tol=1e-8, max_iter=5000), train_x, train_y)}
            row = {"benchmark": "linear_probe_vs_sklearn", "dataset": source, "features": train_x.shape[1],
                   "train": len(train_x), "weight_decay": weight_decay}
            for name, (model, seconds) in fits.items():
                row[f"acc_{name}"] = round(model.score(test_x, test_y), 4)
                row[f"objective_{name}"] = round(objective(model, train_x, train_y, weight_decay), 7)
                if name != "transferlab":
                    row[f"speed_{name}_over_transferlab"] = round(seconds / fits["transferlab"][1], 2)
            print(json.dumps(row), flush=True)
    for source in ("digits", "mnist5k"):
        print(json.dumps(sweeps(source)), flush=True)


if __name__ == "__main__":
    main()
