"""`transferlab rank`: transferability scores of several models on one dataset, and how well each score
orders the models by a downstream metric measured on them.

Every score is computed on the dataset's train split, the data a probe would be fitted on, from the same
cached embeddings evaluation uses (predict/transferability.py has the maths):

- label-free: RankMe, α-ReQ, uniformity, and for models with a text tower the alignment of each image with
  its captions;
- label-based: LogME and H-score; for models with a text tower also LEEP and NCE, with the zero-shot
  classifier over the dataset's class names (the suite's templates, CLIP's logit scale 100) as the source
  classifier.

Higher is better for RankMe, LogME, H-score, LEEP and NCE; lower for alignment and uniformity; α-ReQ is
best near 1. When at least three models have a measured value of the downstream task (the linear probe by
default) in their run's results.json, the Spearman and Kendall rank correlations of each score with it are
reported.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from scipy.special import softmax
from scipy.stats import kendalltau, spearmanr

from transferlab.config import EvalSpec
from transferlab.evaluate.tasks import EmbeddedDataset
from transferlab.models.encoder import ZEROSHOT_LOGIT_SCALE
from transferlab.predict.transferability import alignment, alpha_req, h_score, leep, logme, nce, rankme, uniformity


def transferability_scores(embedded: EmbeddedDataset, spec: EvalSpec, split: str = "train") -> dict[str, float]:
    """Every score that applies to this model on `split` of the embedded dataset."""
    features, labels = embedded.labelled(split, "rank")
    scores = {"rankme": rankme(features), "alpha_req": alpha_req(features), "uniformity": uniformity(features),
              "logme": logme(features, labels), "h_score": h_score(features, labels)}
    if embedded.encode_text is not None:
        captions, owner = embedded.embed_captions(split)
        scores["alignment"] = alignment(features[owner.numpy()], captions.numpy())
        weights = embedded.text_classifier(spec.templates, "rank").numpy()
        probabilities = softmax(ZEROSHOT_LOGIT_SCALE * features.astype(np.float64) @ weights.T, axis=1)
        scores["leep"] = leep(probabilities, labels)
        scores["nce"] = nce(probabilities.argmax(axis=1), labels)
    return scores


def measured_metric(results_path: Path | None, task: str, dataset: str, metric: str = "acc1") -> float | None:
    """The metric of `task` on `dataset` in a results.json, if it is there."""
    if results_path is None or not results_path.is_file():
        return None
    for entry in json.loads(results_path.read_text(encoding="utf-8")).get("tasks", []):
        if entry.get("task") == task and entry.get("dataset") == dataset:
            value = entry.get("metrics", {}).get(metric)
            return None if value is None else float(value)
    return None


def rank_correlations(scores: list[dict[str, float]], measured: list[float | None]) -> dict[str, dict]:
    """Spearman and Kendall correlation of each score with the measured metric, over the models that have it
    (at least three)."""
    kept = [(s, m) for s, m in zip(scores, measured, strict=True) if m is not None]
    if len(kept) < 3:
        return {}
    correlations = {}
    for name in kept[0][0]:
        pairs = [(s[name], m) for s, m in kept if name in s]
        x, y = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
        if len(pairs) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
            continue
        correlations[name] = {"spearman": float(spearmanr(x, y).statistic),
                              "kendall": float(kendalltau(x, y).statistic), "models": len(pairs)}
    return correlations
