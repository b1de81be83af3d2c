"""Evaluate a model on a recipe's `eval` section and write results.json and report.html.

Every dataset is embedded once per split (cached in `<out>/features/`), and every task reads those
embeddings: zero-shot classification of the evaluation split, and a linear probe trained on the
dataset's train split, its penalty chosen on the val split, tested on the evaluation split.
"""

from __future__ import annotations

import functools
import json
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from transferlab.config import Recipe
from transferlab.data.sources import load_splits
from transferlab.errors import UserError
from transferlab.evaluate.features import cached_embeddings, model_fingerprint
from transferlab.evaluate.linear_probe import probe_with_validation
from transferlab.evaluate.metrics import mean_per_class_recall
from transferlab.evaluate.report import write_report
from transferlab.evaluate.zeroshot import zeroshot_classify, zeroshot_weights
from transferlab.fileio import atomic_write
from transferlab.models.dual_encoder import DualEncoder
from transferlab.train.logging import read_metrics


def evaluate(model: DualEncoder, recipe: Recipe, out_dir: Path, model_name: str,
             metrics_path: Path | None = None) -> dict:
    """Run every task of `recipe.eval` on every dataset; write out_dir/{results.json, report.html}."""
    spec, out_dir = recipe.eval, Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fingerprint = model_fingerprint(model)
    tasks, predictions = [], []
    for name in spec.datasets:
        splits = load_splits(name, recipe.datasets[name], model.spec.image_size, model.spec.channels)
        data = splits[spec.split]
        if data.labels is None or data.classnames is None:
            raise UserError(f"eval.tasks need class labels but dataset '{name}' has none. Set its label_column "
                            f"(folder) or label_key (webdataset), or remove it from eval.datasets.")
        if len(data) == 0:
            raise UserError(f"The {spec.split} split of dataset '{name}' is empty. Give it a non-zero fraction "
                            f"in datasets.{name}.splits.")

        embeddings = functools.partial(_embeddings, model, splits, out_dir / "features", fingerprint,
                                       spec.batch_size)
        for task in spec.tasks:
            started = time.perf_counter()
            if task == "zeroshot_classification":
                weights = zeroshot_weights(model, data.classnames, spec.templates)
                metrics, predicted = zeroshot_classify(embeddings(spec.split), weights, data.labels)
            else:
                metrics, predicted = _linear_probe(name, splits, embeddings, spec)
            tasks.append({"task": task, "dataset": name, "split": spec.split, "metrics": metrics,
                          "seconds": round(time.perf_counter() - started, 3)})
            predictions.append({"task": task, "dataset": name, "split": spec.split, "y_true": data.labels.tolist(),
                                "y_pred": predicted.tolist(), "classnames": data.classnames})
    results = {"model": model_name, "suite": recipe.name, "created": datetime.now(timezone.utc).isoformat(),
               "tasks": tasks}
    atomic_write(out_dir / "results.json", json.dumps(results, indent=1))
    write_report(out_dir / "report.html", results, read_metrics(metrics_path) if metrics_path else None, predictions)
    return results


def _embeddings(model: DualEncoder, splits: dict, cache_dir: Path, fingerprint: str, batch_size: int,
                split: str) -> torch.Tensor:
    return cached_embeddings(model, splits[split], split, cache_dir, fingerprint, batch_size)


def _linear_probe(name: str, splits: dict, embeddings, spec) -> tuple[dict, torch.Tensor]:
    if len(splits["val"]) == 0:
        raise UserError(f"linear_probe chooses its penalty on a validation split, but dataset '{name}' has none. "
                        f"Set datasets.{name}.splits.val above 0.")
    probe, _ = probe_with_validation(embeddings("train").numpy(), splits["train"].labels.numpy(),
                                     embeddings("val").numpy(), splits["val"].labels.numpy(),
                                     spec.linear_probe.weight_decays, spec.linear_probe.max_iter)
    labels = splits[spec.split].labels
    predicted = torch.as_tensor(probe.predict(embeddings(spec.split).numpy()))
    metrics = {"acc1": (predicted == labels).float().mean().item(),
               "mean_per_class_recall": mean_per_class_recall(predicted, labels),
               "weight_decay": probe.weight_decay}
    return metrics, predicted
