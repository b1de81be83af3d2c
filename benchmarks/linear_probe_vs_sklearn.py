"""transferlab's LinearProbe against scikit-learn's LogisticRegression on identical features and penalty.

Both minimise the same objective (mean cross-entropy + λ/2 ‖W‖², i.e. sklearn's C = 1/(λ n)); the
benchmark fits each on the train split and scores the test split of a bundled dataset's pixels, for
several λ, and prints one JSON line per (dataset, λ): both accuracies, the largest probability difference
and the wall-time ratio sklearn / transferlab (above 1: transferlab is faster).

    python benchmarks/linear_probe_vs_sklearn.py
"""

from __future__ import annotations

import json
import time

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from transferlab.config import Splits
from transferlab.data.bundled import load_bundled
from transferlab.data.splits import split_indices
from transferlab.evaluate.linear_probe import LinearProbe


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


def main() -> None:
    torch.set_num_threads(1)  # both solvers on one core, the way sklearn's lbfgs runs
    for source in ("digits", "mnist5k"):
        train_x, train_y, test_x, test_y = features(source)
        for weight_decay in (1e-4, 1e-2):
            ours, ours_s = timed_fit(LinearProbe(weight_decay, max_iter=1000), train_x, train_y)
            c = 1 / (weight_decay * len(train_x))
            theirs, theirs_s = timed_fit(LogisticRegression(C=c, max_iter=1000), train_x, train_y)
            print(json.dumps({
                "benchmark": "linear_probe_vs_sklearn", "dataset": source, "features": train_x.shape[1],
                "train": len(train_x), "weight_decay": weight_decay,
                "acc_transferlab": round(ours.score(test_x, test_y), 4),
                "acc_sklearn": round(theirs.score(test_x, test_y), 4),
                "max_prob_diff": float(np.abs(ours.predict_proba(test_x) - theirs.predict_proba(test_x)).max()),
                "speed_ratio_sklearn_over_transferlab": round(theirs_s / ours_s, 2),
            }), flush=True)


if __name__ == "__main__":
    main()
