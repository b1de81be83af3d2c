"""The `association` task, WinoGAViL's: given a text cue and its candidate images, choose the K images that
fit it, K being how many do; scored by the Jaccard index of the chosen and the fitting sets.

As DataComp evaluates it (mlfoundations/datacomp eval_utils/wino_eval.py): the cue is prompted as "A <cue>"
("An <cue>" before a vowel, lower-cased), the candidates are ranked by the cosine similarity of their image
embedding with the prompt's, and the K most similar are chosen (on exactly equal similarities the earlier
candidate first). Metrics: `avg_jaccard_score` over every instance, `jaccard_score_<n>` over the instances with
n candidates (5, 6, 10, 12), `jaccard_score_5-6` (up to 6 candidates) and `jaccard_score_10-12` (10 or more),
the last being DataComp's main metric; NaN (null in results.json) for a size with no instance.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from transferlab.data.readers.winogavil import Instance

SIZES = {"5": (5, 5), "6": (6, 6), "10": (10, 10), "12": (12, 12), "5-6": (0, 6), "10-12": (10, float("inf"))}


def cue_prompt(cue: str) -> str:
    cue = cue.lower()
    return f"An {cue}" if cue and cue[0] in "aeiou" else f"A {cue}"


def jaccard_scores(images: torch.Tensor, cues: torch.Tensor, instances: Sequence[Instance]) -> np.ndarray:
    """The Jaccard index of each instance: `images` [M, D] embed every candidate, `cues` [len(instances), D] the
    prompts (neither need be normalised)."""
    images, cues = F.normalize(images.detach().float(), dim=-1), F.normalize(cues.detach().float(), dim=-1)
    scores = np.empty(len(instances))
    for i, instance in enumerate(instances):
        fits = np.array(instance.fits)
        similarity = (images[instance.start:instance.start + len(fits)] @ cues[i]).numpy()
        chosen = np.zeros(len(fits), dtype=bool)
        chosen[np.argsort(-similarity, kind="stable")[:fits.sum()]] = True
        union = np.count_nonzero(chosen | fits)
        scores[i] = np.count_nonzero(chosen & fits) / union if union else 0.0
    return scores


def association_metrics(scores: np.ndarray, sizes: np.ndarray) -> dict[str, float]:
    """DataComp's WinoGAViL metrics from the Jaccard index and the number of candidates of each instance."""
    metrics = {"avg_jaccard_score": float(scores.mean())}
    for name, (low, high) in SIZES.items():
        chosen = scores[(sizes >= low) & (sizes <= high)]
        metrics[f"jaccard_score_{name}"] = float(chosen.mean()) if len(chosen) else float("nan")
    return metrics
