"""Render an HTML report in headless Chromium and screenshot it: a manual check of the report's layout.

Without arguments it builds a representative two-model report from synthetic data (every task, few-shot
curves, training curves, confusion matrices, embedding maps with short and long class names); with
`--collection`, the report of a `--suite datacomp` run over nine of its datasets (synthetic scores; the missing
datasets as `collection_suite` lists them for a data root holding those nine), screenshot down to its summary
table; given run directories (each holding results.json or eval/results.json, and optionally metrics.jsonl) it
reports those instead. Prints one JSON line: the report, the screenshot and the page height in CSS pixels.
Needs Debian's chromium (`apt-get install chromium`). Not part of the test suite.

    python benchmarks/render_report.py [RUN_DIR ...] [--out DIR] [--tsne]
    python benchmarks/render_report.py --collection --out docs/images   # docs/images/report-collection.png
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from transferlab.evaluate.report import write_report
from transferlab.fileio import read_jsonl_log

WIDTH = 1280
MAX_HEIGHT = 16000  # Chromium's software compositor does not draw taller windows reliably
CHROMIUM = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars"]
DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
LONG_NAMES = [f"{w} with a rather long descriptive class name" for w in ("apple", "banana", "cherry", "date")]
LETTERS = [chr(65 + i) for i in range(26)]


def _accuracy(rng: np.random.Generator, base: float) -> float:
    return float(np.clip(base + rng.normal(0, 0.02), 0, 1))


def _tasks(rng: np.random.Generator, skill: float) -> list[dict]:
    """Every task of the suite on two datasets, plus retrieval, with accuracies around `skill`."""
    tasks = []
    for dataset, hard in (("mnist5k", 0.0), ("digits", 0.15)):
        base = skill - hard
        tasks += [
            {"task": "zeroshot_classification", "dataset": dataset, "split": "test",
             "metrics": {"acc1": _accuracy(rng, base - 0.1), "acc5": _accuracy(rng, base + 0.05),
                         "mean_per_class_recall": _accuracy(rng, base - 0.1)}},
            {"task": "linear_probe", "dataset": dataset, "split": "test",
             "metrics": {"acc1": _accuracy(rng, base), "mean_per_class_recall": _accuracy(rng, base),
                         "weight_decay": float(10.0 ** rng.integers(-6, -2))}},
            {"task": "knn", "dataset": dataset, "split": "test",
             "metrics": {"acc1": _accuracy(rng, base - 0.03), "mean_per_class_recall": _accuracy(rng, base - 0.03),
                         "k": int(rng.choice([10, 20, 50]))}},
            {"task": "ncm", "dataset": dataset, "split": "test",
             "metrics": {"acc1": _accuracy(rng, base - 0.08), "mean_per_class_recall": _accuracy(rng, base - 0.08)}},
            {"task": "fewshot", "dataset": dataset, "split": "test", "metrics": _fewshot(rng, base)},
            {"task": "clustering", "dataset": dataset, "split": "test",
             "metrics": {"nmi": _accuracy(rng, base - 0.2), "nmi_std": 0.01, "ari": _accuracy(rng, base - 0.3),
                         "ari_std": 0.02, "n_clusters": 10}},
        ]
    recalls = {f"{side}_retrieval_recall@{k}": _accuracy(rng, skill - 0.5 + 0.1 * math.log2(k))
               for side in ("text", "image") for k in (1, 5, 10)}
    tasks.append({"task": "retrieval", "dataset": "captions-mini", "split": "test", "metrics": recalls})
    return [dict(t, seconds=float(rng.uniform(0.5, 20))) for t in tasks]


def _fewshot(rng: np.random.Generator, base: float) -> dict:
    metrics = {}
    for method, offset in (("linear_probe", 0.0), ("knn", -0.05), ("ncm", -0.02)):
        for k in (1, 2, 4, 8, 16):
            metrics[f"{method}@{k}shot"] = _accuracy(rng, base - 0.45 / math.sqrt(k) + offset)
            metrics[f"{method}@{k}shot_ci95"] = float(0.08 / math.sqrt(k))
    return metrics


def _training(rng: np.random.Generator, steps: int = 150) -> list[dict]:
    lines = []
    for step in range(0, steps + 1, 5):
        lr = 5e-4 * min(1.0, step / 20) * 0.5 * (1 + math.cos(math.pi * step / steps))
        lines.append({"step": step, "loss": 4.2 * math.exp(-step / 50) + 0.4 + rng.normal(0, 0.05), "lr": lr})
    return lines


def _predictions(rng: np.random.Generator, skill: float) -> list[dict]:
    preds = []
    for task, dataset, names in (("zeroshot_classification", "digits", DIGITS), ("linear_probe", "fruit", LONG_NAMES),
                                 ("knn", "letters", LETTERS)):
        y_true = rng.integers(0, len(names), 500)
        wrong = rng.random(500) > skill
        y_pred = np.where(wrong, rng.integers(0, len(names), 500), y_true)
        preds.append({"task": task, "dataset": dataset, "split": "test", "y_true": y_true, "y_pred": y_pred,
                      "classnames": names})
    return preds


def _maps(rng: np.random.Generator, spread: float) -> list[dict]:
    maps = []
    for dataset, names, n in (("digits", DIGITS, 3000), ("fruit", LONG_NAMES, 800),
                              ("letters", LETTERS, 1500)):
        labels = rng.integers(0, len(names), n)
        centres = rng.normal(size=(len(names), 64))
        features = centres[labels] + spread * rng.normal(size=(n, 64))
        maps.append({"dataset": dataset, "split": "test", "features": features, "labels": labels,
                     "classnames": names})
    return maps


def synthetic_models() -> list[dict]:
    rng = np.random.default_rng(0)
    models = []
    for name, skill, spread in (("clip-vit-tiny", 0.9, 0.6), ("siglip-vit-tiny", 0.86, 0.8)):
        results = {"model": name, "suite": "full", "created": "2026-11-24T10:00:00+00:00", "tasks": _tasks(rng, skill)}
        models.append({"results": results, "metrics": _training(rng), "predictions": _predictions(rng, skill),
                       "embedding_maps": _maps(rng, spread)})
    return models


COLLECTION_RAN = {  # dataset -> (folder a download gives it, task, main metric, score)
    "cifar10": ("wds_cifar10_test", "zeroshot_classification", "acc1", 0.912),
    "vtab/pets": ("wds_vtab-pets_test", "zeroshot_classification", "mean_per_class_recall", 0.874),
    "imagenet1k": ("wds_imagenet1k_test", "zeroshot_classification", "acc1", 0.632),
    "stl10": ("wds_stl10_test", "zeroshot_classification", "acc1", 0.958),
    "retrieval/flickr_1k_test_image_text_retrieval": ("hf_cache/nlphuji___flickr_1k_test_image_text_retrieval",
                                                      "retrieval", "mean_recall@1", 0.705),
    "misc/winogavil": ("hf_cache/nlphuji___winogavil", "association", "jaccard_score_10-12", 0.413),
    "wilds/iwildcam": ("wds_wilds-iwildcam_test", "zeroshot_classification", "F1-macro_all", 0.112),
    "wilds/fmow": ("wds_wilds-fmow_test", "zeroshot_classification", "acc_worst_region", 0.118),
    "fairness/geode": ("wds_geode_test", "zeroshot_classification", "acc_wg", 0.847),
}


def collection_models(root: Path) -> list[dict]:
    """One model's datacomp run over COLLECTION_RAN; the missing datasets as listed for a root holding those."""
    from transferlab.evaluate.collections import collection_suite
    from transferlab.evaluate.suite import collection_summary

    for folder, *_ in COLLECTION_RAN.values():
        (root / folder / "test").mkdir(parents=True, exist_ok=True)
        (root / folder / "test" / "nshards.txt").write_text("1\n")
    tasks = [{"task": task, "dataset": dataset, "split": "test", "metrics": {main: value}, "main": main,
              "seconds": 12.0} for dataset, (_, task, main, value) in COLLECTION_RAN.items()]
    summary = collection_summary(collection_suite("datacomp", root).collection, tasks)
    return [{"results": {"model": "openclip:ViT-B-32:datacomp_m_s128m_b4k", "suite": "datacomp",
                         "created": "2026-11-24T10:00:00+00:00", "tasks": tasks, "collection": summary}}]


def run_models(run_dirs: list[Path]) -> list[dict]:
    models = []
    for run_dir in run_dirs:
        found = [p for p in (run_dir / "results.json", run_dir / "eval" / "results.json") if p.is_file()]
        if not found:
            raise SystemExit(f"{run_dir} has neither results.json nor eval/results.json")
        models.append({"results": json.loads(found[0].read_text(encoding="utf-8")),
                       "metrics": read_jsonl_log(run_dir / "metrics.jsonl") or None})
    return models


def _chromium(*args: str) -> str:
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    try:
        done = subprocess.run([*CHROMIUM, f"--user-data-dir={profile}", *args], capture_output=True, text=True,
                              timeout=180, check=True)
        return done.stdout
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def page_height(report: Path) -> int:
    """The laid-out page height, read from a copy of the report with a one-line script (the report has none)."""
    probe = report.with_name(report.stem + ".height-probe.html")
    script = ("<script>addEventListener('load', () => document.body.dataset.height = "
              "document.documentElement.scrollHeight)</script></body>")
    probe.write_text(report.read_text(encoding="utf-8").replace("</body>", script), encoding="utf-8")
    try:
        dom = _chromium(f"--window-size={WIDTH},1000", "--dump-dom", probe.resolve().as_uri())
    finally:
        probe.unlink()
    return int(re.search(r'data-height="(\d+)"', dom).group(1))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dirs", type=Path, nargs="*")
    parser.add_argument("--out", type=Path, default=None, help="directory for report.html and report.png")
    parser.add_argument("--tsne", action="store_true", help="embedding maps by t-SNE instead of PCA")
    parser.add_argument("--collection", action="store_true", help="a datacomp collection run's report")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="render-report-"))
    if args.collection:
        models = collection_models(Path(tempfile.mkdtemp(prefix="render-report-")) / "datacomp")
    else:
        models = run_models(args.run_dirs) if args.run_dirs else synthetic_models()
    name = "report-collection" if args.collection else "report"
    report = write_report(out / f"{name}.html", models, embedding_method="tsne" if args.tsne else "pca")
    height = min(page_height(report), 1450) if args.collection else page_height(report)
    screenshot = out / f"{name}.png"
    _chromium(f"--window-size={WIDTH},{min(height, MAX_HEIGHT)}", f"--screenshot={screenshot.resolve()}",
              report.resolve().as_uri())
    print(json.dumps({"report": str(report), "report_bytes": report.stat().st_size, "screenshot": str(screenshot),
                      "page_height": height, "truncated": height > MAX_HEIGHT}), flush=True)


if __name__ == "__main__":
    main()
