"""DataComp's metrics of its WILDS and fairness tasks: accuracy by group of samples and its worst group, and
iWildCam's macro F1, from a classifier's scores, the labels and each sample's group metadata.

DataComp (mlfoundations/datacomp, eval_utils/wilds_eval.py and fairness_eval.py) scores these datasets with
WILDS's metric classes on zero-shot predictions; each dataset's webdataset carries a metadata row per sample
(a `.npy` member) whose columns its evaluator names (`FIELDS` below, copied from the evaluators'
`_metadata_fields`). The names of the metrics are DataComp's:

- `<acc>_avg`: accuracy over all samples (`acc`, or `acc_top5` for Dollar Street: the label among the 5
  highest scores);
- `<acc>_<field>:<value>` and `count_<field>:<value>`: accuracy and size of each group present (a group is
  the samples sharing a value of `field`);
- the worst group: the lowest accuracy over the groups present (WILDS's `worst`), `acc_wg` (Camelyon17 by
  slide, GeoDE by region), `acc_top5_wg` (Dollar Street by income group), `acc_worst_year` and
  `acc_worst_region` (FMoW). DataComp's FMoW evaluator skips regions whose group name contains "Other", but
  it builds the groups without WILDS's metadata map, so the names are "region:5" and nothing is skipped: the
  "Other" region counts like the rest here too;
- iWildCam: `F1-macro_all` and `recall-macro_all`, F1 and recall of each class present in the labels
  averaged over those classes (scikit-learn's `f1_score(average="macro", labels=unique(y_true))`, which WILDS
  calls: a class only ever predicted does not count), and `acc_avg`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from transferlab.errors import UserError


@dataclass(frozen=True)
class Protocol:
    fields: tuple[str, ...]  # the columns of a sample's metadata row, in order
    worst: dict[str, str]  # worst-group metric name -> the field whose values make the groups
    top: int = 1  # a prediction is right when the label is among the `top` highest scores
    macro: bool = False  # iWildCam's macro F1 and recall


PROTOCOLS = {
    "iwildcam": Protocol(("location", "sequence", "year", "month", "day", "hour", "minute", "second", "y"), {},
                         macro=True),
    "camelyon17": Protocol(("hospital", "slide", "y"), {"acc_wg": "slide"}),
    "fmow": Protocol(("region", "year", "y"), {"acc_worst_year": "year", "acc_worst_region": "region"}),
    "dollar_street": Protocol(("income_ds", "income_meta", "region"), {"acc_top5_wg": "income_ds"}, top=5),
    "geode": Protocol(("region", "country"), {"acc_wg": "region"}),
}


def group_metrics(protocol: str, scores: np.ndarray, labels: np.ndarray, metadata: np.ndarray | None,
                  dataset: str = "the dataset") -> dict[str, float]:
    """DataComp's metrics of `protocol` (a key of PROTOCOLS) from `scores` [N, C] (higher is likelier),
    `labels` [N] and `metadata` [N, len(fields)] integers (None when the protocol groups nothing)."""
    rule = PROTOCOLS[protocol]
    scores, labels = np.asarray(scores), np.asarray(labels)
    top = np.argsort(-scores, axis=1, kind="stable")[:, :rule.top]
    correct = (top == labels[:, None]).any(axis=1).astype(np.float64)
    prefix = "acc" if rule.top == 1 else f"acc_top{rule.top}"
    metrics = {f"{prefix}_avg": float(correct.mean())}
    if rule.macro:
        metrics.update(macro_scores(labels, top[:, 0]))
    if rule.worst:
        metadata = checked_metadata(metadata, rule.fields, len(labels), dataset)
    for name, field in rule.worst.items():
        column = metadata[:, rule.fields.index(field)]
        accuracy, counts = group_accuracies(correct, column)
        for value in accuracy:
            metrics[f"{prefix}_{field}:{value}"] = accuracy[value]
            metrics[f"count_{field}:{value}"] = float(counts[value])
        metrics[name] = min(accuracy.values())
    return metrics


def group_accuracies(correct: np.ndarray, groups: np.ndarray) -> tuple[dict[int, float], dict[int, int]]:
    """Mean of `correct` and size of each group present, by group value (ascending)."""
    values, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=correct, minlength=len(values))
    return ({int(v): float(s / c) for v, s, c in zip(values, sums, counts, strict=True)},
            {int(v): int(c) for v, c in zip(values, counts, strict=True)})


def macro_scores(labels: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """`F1-macro_all` and `recall-macro_all`: F1 (2·tp / (predicted + true)) and recall (tp / true) of each
    class present in `labels`, averaged over those classes."""
    classes, true = np.unique(labels, return_counts=True)
    hits = labels[predicted == labels]
    tp = np.array([np.count_nonzero(hits == c) for c in classes], dtype=np.float64)
    guessed = np.array([np.count_nonzero(predicted == c) for c in classes], dtype=np.float64)
    return {"recall-macro_all": float(np.mean(tp / true)), "F1-macro_all": float(np.mean(2 * tp / (guessed + true)))}


def checked_metadata(metadata: np.ndarray | None, fields: tuple[str, ...], count: int, dataset: str) -> np.ndarray:
    """`metadata` as an integer array [count, len(fields)], or a UserError saying what the dataset lacks."""
    layout = f"a row of {len(fields)} integers per sample ({', '.join(fields)}) in a .npy member beside its image"
    if metadata is None:
        raise UserError(f"{dataset} has no group metadata; its worst-group metric needs {layout}, as DataComp's "
                        f"download of it has (mlfoundations/datacomp download_evalsets.py).")
    metadata = np.asarray(metadata)
    if metadata.shape != (count, len(fields)) or not np.issubdtype(metadata.dtype, np.integer):
        raise UserError(f"{dataset}: its group metadata is {metadata.dtype} {metadata.shape} for {count} samples, "
                        f"but its worst-group metric needs {layout}. Download the dataset again.")
    return metadata
