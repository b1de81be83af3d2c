"""DataComp's WILDS and fairness metrics: hand-computed cases, scikit-learn for the macro F1, and DataComp's own
evaluators (from a checkout, tests/evaluate/datacomp_reference.py) on generated predictions and metadata."""

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score, recall_score

from tests.evaluate.datacomp_reference import datacomp_module
from transferlab.errors import UserError
from transferlab.evaluate.group_metrics import PROTOCOLS, group_metrics


def one_hot(predicted, classes=4):
    """Scores whose argmax is `predicted`."""
    return np.eye(classes)[np.asarray(predicted)]


def test_geode_worst_region_by_hand():
    labels = np.array([0, 1, 2, 3, 0, 1])
    predicted = [0, 0, 2, 3, 1, 1]  # right: 1 0 1 1 0 1
    metadata = np.array([[0, 9], [0, 9], [1, 9], [1, 9], [1, 9], [2, 9]])  # regions 0 0 1 1 1 2
    metrics = group_metrics("geode", one_hot(predicted), labels, metadata)
    assert metrics["acc_avg"] == pytest.approx(4 / 6)
    assert metrics["acc_region:0"] == 0.5 and metrics["acc_region:1"] == pytest.approx(2 / 3)
    assert metrics["acc_region:2"] == 1.0 and metrics["count_region:1"] == 3
    assert metrics["acc_wg"] == 0.5


def test_fmow_counts_the_other_region_and_years_separately():
    labels = np.array([0, 0, 1, 1])
    predicted = [0, 1, 1, 0]
    metadata = np.array([[0, 3, 0], [5, 3, 0], [5, 4, 1], [0, 4, 1]])  # region 5 is WILDS's "Other"
    metrics = group_metrics("fmow", one_hot(predicted), labels, metadata)
    assert metrics["acc_region:5"] == 0.5 and metrics["acc_worst_region"] == 0.5
    assert metrics["acc_year:3"] == 0.5 and metrics["acc_worst_year"] == 0.5
    assert "acc_region:1" not in metrics  # only the groups present


def test_dollar_street_counts_a_label_among_the_top_five():
    scores = np.array([[9, 8, 7, 6, 5, 4, 0.0], [9, 8, 7, 6, 5, 4, 0.0]])
    labels = np.array([4, 5])  # 5th highest: right; 6th: wrong
    metrics = group_metrics("dollar_street", scores, labels, np.array([[1, 0, 0], [2, 0, 0]]))
    assert metrics["acc_top5_income_ds:1"] == 1.0 and metrics["acc_top5_income_ds:2"] == 0.0
    assert metrics["acc_top5_avg"] == 0.5 and metrics["acc_top5_wg"] == 0.0


def test_iwildcam_macro_f1_by_hand_and_against_scikit_learn():
    labels, predicted = np.array([0, 0, 1, 2]), np.array([0, 1, 1, 3])
    # class 0: tp 1, predicted 1, true 2 -> F1 2/3; class 1: 1, 2, 1 -> 2/3; class 2: 0, 0, 1 -> 0; class 3 absent
    metrics = group_metrics("iwildcam", one_hot(predicted), labels, None)
    assert metrics["F1-macro_all"] == pytest.approx(4 / 9) and metrics["recall-macro_all"] == pytest.approx(0.5)
    assert metrics["acc_avg"] == 0.5
    rng = np.random.default_rng(0)
    for _ in range(20):
        labels, predicted = rng.integers(0, 30, 200), rng.integers(0, 35, 200)
        metrics = group_metrics("iwildcam", one_hot(predicted, 35), labels, None)
        present = np.unique(labels)
        assert metrics["F1-macro_all"] == pytest.approx(f1_score(labels, predicted, average="macro", labels=present))
        assert metrics["recall-macro_all"] == pytest.approx(recall_score(labels, predicted, average="macro",
                                                                         labels=present))


def test_metadata_that_does_not_fit_is_one_message():
    with pytest.raises(UserError, match="wilds/fmow has no group metadata.*region, year, y"):
        group_metrics("fmow", one_hot([0]), np.array([0]), None, "wilds/fmow")
    with pytest.raises(UserError, match=r"float64 \(1, 3\).*2 integers per sample \(region, country\)"):
        group_metrics("geode", one_hot([0]), np.array([0]), np.zeros((1, 3)), "fairness/geode")


def generated(fields: int, seed: int, count: int = 400, classes: int = 12):
    """Scores that are right about half the time, labels, and metadata with a few values per field."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, count)
    scores = rng.normal(size=(count, classes)) + 1.5 * np.eye(classes)[labels]
    metadata = np.stack([rng.integers(0, 3 + i, count) for i in range(fields)], axis=1)
    metadata[:, 0][metadata[:, 0] == 1] = 5  # a gap: group 1 absent, as groups often are in a test split
    return scores, labels, metadata


@pytest.mark.parametrize("task, protocol", [("wilds/iwildcam", "iwildcam"), ("wilds/camelyon17", "camelyon17"),
                                            ("wilds/fmow", "fmow"), ("fairness/dollar_street", "dollar_street"),
                                            ("fairness/geode", "geode")])
def test_equal_to_datacomps_evaluators(task, protocol):
    evaluators = datacomp_module("fairness_eval").EVALUATORS  # imports wilds_eval's too
    rule = PROTOCOLS[protocol]
    for seed in range(3):
        scores, labels, metadata = generated(len(rule.fields), seed)
        logits = torch.as_tensor(scores)
        # what DataComp's evaluate_webdataset returns: argmax, or the top 5 for Dollar Street
        y_pred = logits.topk(5, dim=1).indices if rule.top == 5 else logits.argmax(dim=1)
        meta = torch.as_tensor(metadata, dtype=torch.long)
        theirs = evaluators[task](meta).eval(y_pred, torch.as_tensor(labels), meta)[0]
        ours = group_metrics(protocol, scores, labels, metadata)
        compared = {k: float(theirs[k]) for k in ours}  # a KeyError here is a metric DataComp does not name so
        assert ours == pytest.approx(compared, abs=1e-6)  # DataComp averages groups in float32
        absent = [k for k, v in theirs.items() if isinstance(v, float) and math.isnan(v)]
        assert not any(k in ours for k in absent)  # DataComp's empty groups (NaN) are left out
