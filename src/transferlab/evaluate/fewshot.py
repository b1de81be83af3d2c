"""Few-shot transfer: fit a classifier on k labelled examples per class, for several k and random draws.

For each shot count k and seed, `sample_shots` draws k training examples of every class without replacement
from a generator seeded by (k, seed) alone, so a draw does not depend on the other shot counts or seeds asked
for; a class with fewer than k examples contributes all it has, and `fewshot_curve` records which. A fresh
estimator from the factory is fit on the draw and scored (its `score`, accuracy for a classifier) on the whole
test split. Over the n seeds the scores a_1..a_n give

    mean ā,   std s = sqrt(Σ (a_i - ā)² / (n - 1)),   95% CI  ā ± t_{0.975, n-1} · s / √n

(Student's t, as the n draws are few); with one seed s and the half-width are nan.

Estimators that tune hyperparameters on validation data (a `val_x` / `val_y` parameter: GDA's ensemble
weight, Tip-Adapter's α and β) get a few-shot validation set when `val` is given: k examples per class of
the val split, drawn with the same (k, seed), as the few-shot protocols of CoOp and GDA do, so no method sees
more labels than the shots it is credited with on each split.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import scipy.stats


def sample_shots(labels, shots: int, seed: int) -> np.ndarray:
    """Sorted indices of min(shots, available) examples of every class in `labels`."""
    labels = np.asarray(labels)
    rng = np.random.default_rng([shots, seed])
    picks = [rng.choice(np.flatnonzero(labels == c), size=min(shots, count), replace=False)
             for c, count in zip(*np.unique(labels, return_counts=True), strict=True)]
    return np.sort(np.concatenate(picks))


def fewshot_curve(estimator_factory: Callable, train_x, train_y, test_x, test_y,
                  shots: Sequence[int] = (1, 2, 4, 8, 16), seeds: int | Sequence[int] = 3,
                  val: tuple | None = None) -> dict[int, dict]:
    """Per shot count: {"mean", "std", "n", "ci95", "scores", "short_classes"}.

    `estimator_factory()` must return a fresh unfitted estimator (an estimator class or a functools.partial of
    one will do); `seeds` is a count (seeds 0..n-1) or the seeds themselves. "ci95" is the half-width of the 95%
    t-interval, "scores" the per-seed scores, and "short_classes" maps each class with fewer than k training
    examples to the number it has (all of which were used). `val`: (features, labels) of the val split, for
    estimators that tune on it (see above).
    """
    seeds = range(seeds) if isinstance(seeds, int) else seeds
    train_y = np.asarray(train_y)
    classes, counts = np.unique(train_y, return_counts=True)
    curve = {}
    for k in shots:
        scores = []
        for seed in seeds:
            chosen = sample_shots(train_y, k, seed)
            estimator = estimator_factory()
            if val is not None and "val_x" in estimator.get_params():
                picked = sample_shots(val[1], k, seed)
                estimator.set_params(val_x=val[0][picked], val_y=val[1][picked])
            scores.append(float(estimator.fit(train_x[chosen], train_y[chosen]).score(test_x, test_y)))
        n, short = len(scores), counts < k
        std = float(np.std(scores, ddof=1)) if n > 1 else float("nan")
        half_width = float(scipy.stats.t.ppf(0.975, n - 1) * std / np.sqrt(n)) if n > 1 else float("nan")
        curve[k] = {"mean": float(np.mean(scores)), "std": std, "n": n, "ci95": half_width, "scores": scores,
                    "short_classes": dict(zip(classes[short].tolist(), counts[short].tolist(), strict=True))}
    return curve
