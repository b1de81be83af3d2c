"""Evaluate one or several models on a suite; write results.json per model and one report.html.

Each dataset is loaded once per model at the model's resolution, each split embedded at most once (and
cached on disk under `<out>/features/`), and every task reads those embeddings. With one model the
results go to `<out>/results.json`; with several, to `<out>/<model>/results.json`, and the report
compares them side by side. A model with images but no text tower (a timm backbone) skips what needs
text (zero-shot, retrieval, text-based few-shot methods), and the task's entry says so in `skipped`. Under
torchrun every rank runs the suite on gathered features (the embedding pass is shared,
evaluate/features.py); rank 0 writes the results and the report.
"""

from __future__ import annotations

import functools
import json
import re
import time
from datetime import datetime, timezone
from pathlib import Path

from transferlab import distributed
from transferlab.config import Recipe, Suite
from transferlab.config.schema import Collection
from transferlab.data.dataset import ImageTextData
from transferlab.data.fingerprint import dataset_fingerprint
from transferlab.data.readers.sample_metadata import read_sample_metadata
from transferlab.data.readers.sources import load_splits
from transferlab.data.readers.text_pairs import TextPairData
from transferlab.data.readers.winogavil import AssociationData
from transferlab.errors import UserError
from transferlab.evaluate.collections import collection_scores
from transferlab.evaluate.features import caption_embeddings, image_embeddings, query_embeddings
from transferlab.evaluate.provenance import provenance
from transferlab.evaluate.report import write_report
from transferlab.evaluate.tasks import TASKS, EmbeddedDataset, without_text
from transferlab.fileio import atomic_write, read_jsonl_log
from transferlab.models.encoder import Encoder

# a dataset's eval.main_metrics overrides these
MAIN_METRICS = {"zeroshot_classification": "acc1", "linear_probe": "acc1", "knn": "acc1", "ncm": "acc1",
                "retrieval": "mean_recall@1", "clustering": "nmi", "association": "jaccard_score_10-12"}
NEEDS_LABELS = ("zeroshot_classification", "linear_probe", "knn", "ncm", "fewshot", "clustering")


def suite_of(recipe: Recipe) -> Suite:
    """A recipe's `eval` section as a suite over the recipe's datasets."""
    return Suite(name=recipe.name, datasets=recipe.datasets, eval=recipe.eval)


def evaluate(models: list[tuple[Encoder, Suite]], out_dir: Path, embedding_method: str = "pca") -> list[dict]:
    """Run each model's suite; write results.json (per model) and report.html; return the results."""
    out_dir = Path(out_dir)
    main = distributed.current().main
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
    sections = []
    for (encoder, suite), target in zip(models, results_dirs(out_dir, [e.name for e, _ in models]), strict=True):
        sections.append(run_suite(encoder, suite, target, out_dir / "features"))
    if main:
        write_report(out_dir / "report.html", sections, embedding_method=embedding_method)
    distributed.barrier()  # nothing returns before rank 0 has written
    return [section["results"] for section in sections]


def run_suite(encoder: Encoder, suite: Suite, out_dir: Path, cache_dir: Path | None) -> dict:
    """Every task of the suite on every dataset; results.json in out_dir (rewritten after each dataset, so a
    failure later keeps what was measured); the model's report section."""
    spec = suite.eval
    unknown = sorted({task for name in spec.datasets for task in spec.tasks_for(name) if task not in TASKS})
    if unknown:
        raise UserError(f"Unknown task(s) {unknown} in eval.tasks; the tasks are {', '.join(TASKS)}.")
    tasks, predictions, maps, datasets = [], [], [], {}
    results = {"model": encoder.name, "suite": suite.name, "created": datetime.now(timezone.utc).isoformat(),
               "provenance": provenance(encoder, suite, datasets), "tasks": tasks}  # filled in as datasets run
    _write(results, out_dir)
    image_only = encoder.encode_image is not None and encoder.encode_text is None
    for name in spec.datasets:
        embedded = embedded_dataset(encoder, suite, name, cache_dir)
        datasets[name] = _data_entry(suite, name, embedded)
        for task in spec.tasks_for(name):
            entry = {"task": task, "dataset": name, "split": spec.split}
            task_spec, skipped = without_text(task, spec, encoder.name) if image_only else (spec, None)
            reason = skipped if task_spec is None else not_applicable(task, embedded)
            if reason:  # recorded, so a report says what was not measured, and why
                tasks.append({**entry, "metrics": {}, "skipped": reason, "seconds": 0.0})
                continue
            started = time.perf_counter()
            metrics, predicted = TASKS[task](embedded, task_spec)
            main = spec.main_metrics.get(name, MAIN_METRICS.get(task))
            tasks.append({**entry, "metrics": _finite(metrics), **({"main": main} if main in metrics else {}),
                          "seconds": round(time.perf_counter() - started, 3),
                          **({"skipped": skipped} if skipped else {})})
            if predicted is not None:
                predictions.append({"task": task, "dataset": name, "split": spec.split,
                                    "y_true": embedded.data.labels.tolist(), "y_pred": predicted.tolist(),
                                    "classnames": embedded.data.classnames})
        if getattr(embedded.data, "labels", None) is not None and len(embedded.data):
            maps.append({"dataset": name, "split": spec.split, "features": embedded.embed(spec.split).numpy(),
                         "labels": embedded.data.labels.numpy(), "classnames": embedded.data.classnames})
        if suite.collection is not None:
            results["collection"] = collection_summary(suite.collection, tasks)
        _write(results, out_dir)
    metrics_path = None if encoder.run_dir is None else encoder.run_dir / "metrics.jsonl"
    return {"results": results, "metrics": read_jsonl_log(metrics_path) if metrics_path else None,
            "predictions": predictions, "embedding_maps": maps}


def not_applicable(task: str, embedded: EmbeddedDataset) -> str | None:
    """Why `task` cannot run on the dataset (no labels, no class names, no captions), or None."""
    data = embedded.data
    if task in NEEDS_LABELS and getattr(data, "labels", None) is None:
        return f"dataset '{embedded.name}' has no class labels"
    if task == "zeroshot_classification" and data.classnames_from is None:
        return (f"dataset '{embedded.name}' names its classes only by their integer labels (no class-name file was "
                f"found; see its data notes), and zero-shot needs class names")
    if (task == "association") != isinstance(data, AssociationData):
        return (f"dataset '{embedded.name}' holds no association instances (cues with candidate images, WinoGAViL's "
                f"format)" if task == "association" else
                f"dataset '{embedded.name}' is made of association instances, which only the association task reads")
    if task == "retrieval" and isinstance(data, ImageTextData) and any(not captions for captions in data.captions):
        return (f"dataset '{embedded.name}' has images without captions (label-only data), so there is nothing to "
                f"retrieve")
    return None


def collection_summary(collection: Collection, tasks: list[dict]) -> dict:
    """The collection's average: the mean main metric over its datasets that ran, one per dataset (DataComp's
    average when all of them did), with how many ran and which were absent."""
    values = [value for _, _, value in collection_scores(tasks).values()]
    return {"name": collection.name, "size": collection.size, "ran": len(values),
            "average": sum(values) / len(values) if values else None, "missing": collection.missing}


def _data_entry(suite: Suite, name: str, embedded: EmbeddedDataset) -> dict:
    """The dataset's fingerprint entry in the provenance: sample counts, a hash of its files, its notes."""
    splits = {split: len(data) for split, data in embedded.splits.items()}
    notes = getattr(embedded.data, "report", None)
    return {"samples": sum(splits.values()), "splits": splits, "fingerprint": dataset_fingerprint(suite.datasets[name]),
            **({"notes": notes.notes} if notes is not None and notes.notes else {})}


def _write(results: dict, out_dir: Path) -> None:
    if distributed.current().main:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        atomic_write(Path(out_dir) / "results.json", json.dumps(results, indent=1))


def embedded_dataset(encoder: Encoder, suite: Suite, name: str, cache_dir: Path | None) -> EmbeddedDataset:
    """Dataset `name` of the suite at the encoder's resolution, its splits embedded (and cached) on first use."""
    if name not in suite.datasets:
        raise UserError(f"Dataset '{name}' is not defined in suite '{suite.name}'; its datasets are "
                        f"{', '.join(suite.datasets) or 'none'}.")
    spec, source = suite.eval, suite.datasets[name]
    if encoder.decode is not None and getattr(source, "stream", False) == "auto":
        # image files are kept encoded, so the feature pass gives the model the pixels of its own library's
        # resize and crop (models/pixels.py); `stream: false` keeps transferlab's resize
        source = source.model_copy(update={"stream": True})
    splits = load_splits(name, source, encoder.image_size, encoder.channels)
    return EmbeddedDataset(name=name, split=spec.split, splits=splits,
                embed=functools.cache(lambda split: _first_side(encoder, splits[split], split, cache_dir,
                                                                spec.batch_size)),
                embed_captions=functools.cache(lambda split: caption_embeddings(encoder, splits[split], split,
                                                                               cache_dir, spec.batch_size)),
                encode_text=encoder.encode_text, model=encoder.module,
                group_metadata=functools.cache(lambda split: read_sample_metadata(source, split, splits[split])))


def _first_side(encoder: Encoder, data, split: str, cache_dir: Path | None, batch_size: int | None):
    """Image embeddings, or for text pairs the left texts' embeddings: what retrieval queries with."""
    if isinstance(data, TextPairData):
        return query_embeddings(encoder, data, split, cache_dir, batch_size)
    return image_embeddings(encoder, data, split, cache_dir, batch_size)


def _finite(metrics: dict) -> dict:
    """Metrics with NaN (e.g. the interval of a single seed) as null, so results.json stays valid JSON."""
    return {k: None if isinstance(v, float) and v != v else v for k, v in metrics.items()}


def results_dirs(out_dir: Path, names: list[str]) -> list[Path]:
    """Where each model's results.json goes: `out_dir` for one model, `out_dir/<slug of its name>` for several."""
    return [Path(out_dir)] if len(names) == 1 else [Path(out_dir) / slug for slug in _unique_slugs(names)]


def _unique_slugs(names: list[str]) -> list[str]:
    """File-system-safe, distinct directory names for the models of one evaluation."""
    slugs = []
    for name in names:
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", name.strip("/")).strip("_")[-80:] or "model"
        while slug in slugs:
            slug += "_"
        slugs.append(slug)
    return slugs
