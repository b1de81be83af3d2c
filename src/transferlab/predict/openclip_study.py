"""The runs of a published scaling study as a runs table, and the held-out protocol `predict` is validated with.

The study is Cherti et al. 2023, "Reproducible scaling laws for contrastive language-image learning" (CVPR,
arXiv:2212.07143). Its repository, github.com/LAION-AI/scaling-laws-openclip, publishes two tables:

- `trained_models_info.csv`: one row per trained model (`name`, `arch`, `data` 80M/400M/2B, `samples_seen_pretty`,
  `lr`, `warmup`, `gpus`, `local_bs`, ...);
- `zeroshot_results.csv`: one row per (model, downstream dataset): `name`, `arch`, `samples_seen`, `gmacs_total` (one
  sample's forward GMACs × samples seen), `upstream_dataset`, `downstream_dataset`, `acc1`, `acc5`,
  `mean_per_class_recall`, `image_retrieval_recall@5`, `text_retrieval_recall@5`, `mean_average_precision`, `task`.

`load_study` joins them into one run per row, the table `transferlab predict` reads: `run` (the model's name without
`.pt`), `arch`, `data` (LAION-80M, LAION-400M, LAION-2B), `samples` (samples seen), `gmacs_total`, `flops` (training
FLOPs, 6 × 10⁹ × gmacs_total: a training step costs three forward passes and a MAC is two FLOPs, the unit of
transferlab's own runs), `lr`, `batch` (gpus × local_bs), and every published metric as `<task>/<dataset>/<metric>`
(`zeroshot_classification/imagenet1k/acc1`, `retrieval/mscoco_captions/image_retrieval_recall@5`, ...). Rows of
zero-shot results for models that are not in trained_models_info.csv (OpenAI's CLIP, `openai`) are not the study's
runs and are left out. The repository carries no license, so transferlab does not ship the two files; fetch them
(`git clone https://github.com/LAION-AI/scaling-laws-openclip`) and point at the folder.

    python -m transferlab.predict.openclip_study scaling-laws-openclip/ runs.csv --data LAION-2B

The held-out protocol (fixed before any held-out error was computed; docs/prediction.md) is `THRESHOLD_GMACS`,
`SERIES` and `TARGETS` below, used by benchmarks/predict_published.py and its test.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from transferlab.errors import UserError
from transferlab.predict.study_converter import convert

RUNS_FILE = "trained_models_info.csv"
RESULTS_FILE = "zeroshot_results.csv"
SOURCE = "https://github.com/LAION-AI/scaling-laws-openclip"
SOURCE_COMMIT = "652b1e7471f7ccf372277f67cb680de5c9fa139d"

# --- the held-out protocol ------------------------------------------------------------------------------------------
# Each upstream dataset is its own series: one data source, models and training lengths varied, as a user scales.
SERIES = ("LAION-80M", "LAION-400M", "LAION-2B")
# Fitted: every run below 10¹² GMACs (ViT-B/32 and ViT-B/16 at 3B, 13B and 34B samples, ViT-L/14 at 3B: 7 runs per
# series). Predicted: every run above (ViT-L/14 at 13B and 34B; on LAION-2B also ViT-g/14 13B and ViT-H/14 34B).
THRESHOLD_GMACS = 1e12
# ImageNet, ImageNet robustness, VTAB and retrieval, each with the study's own metric.
TARGETS = (
    "zeroshot_classification/imagenet1k/acc1",
    "zeroshot_classification/imagenetv2/acc1",
    "zeroshot_classification/imagenet_robustness/acc1",
    "zeroshot_classification/vtab+/acc1",
    "retrieval/mscoco_captions/image_retrieval_recall@5",
    "retrieval/flickr30k/image_retrieval_recall@5",
)
LEVEL = 0.9

RUN_COLUMNS = ("name", "arch", "data", "lr", "warmup", "gpus", "local_bs")
RESULT_COLUMNS = ("name", "samples_seen", "gmacs_total", "upstream_dataset", "downstream_dataset", "task")
METRICS = ("acc1", "acc5", "mean_per_class_recall", "image_retrieval_recall@5", "text_retrieval_recall@5",
           "mean_average_precision")
TASKS = {"zeroshot_classification": "zeroshot_classification", "zeroshot_retrieval": "retrieval"}
FLOPS_PER_GMAC_TOTAL = 6e9  # training FLOPs per forward GMAC: 3 passes (forward, backward) × 2 FLOPs per MAC


def load_study(folder: str | Path) -> list[dict[str, Any]]:
    """One run per row (see the module's docstring), in the order of trained_models_info.csv."""
    folder = Path(folder)
    models = _read_table(folder / RUNS_FILE, RUN_COLUMNS)
    runs: dict[str, dict[str, Any]] = {}
    for line, row in models:
        name = row["name"]
        if name in runs:
            raise UserError(f"Line {line} of {folder / RUNS_FILE} names model '{name}' a second time; keep one row "
                            f"per model.")
        runs[name] = {"run": name.removesuffix(".pt"), "arch": row["arch"], "data": f"LAION-{row['data']}",
                      "lr": _number(row, "lr", line, folder / RUNS_FILE),
                      "batch": _number(row, "gpus", line, folder / RUNS_FILE)
                      * _number(row, "local_bs", line, folder / RUNS_FILE)}
    seen: dict[tuple[str, str], int] = {}
    for line, row in _read_table(folder / RESULTS_FILE, RESULT_COLUMNS + METRICS):
        run = runs.get(row["name"])
        if run is not None:
            _add_result(run, row, line, folder / RESULTS_FILE, seen)
    missing = [run["run"] for run in runs.values() if "flops" not in run]
    if missing:
        raise UserError(f"{folder / RESULTS_FILE} has no zero-shot result for model(s) {', '.join(missing)} of "
                        f"{folder / RUNS_FILE}; use the two files of one snapshot of {SOURCE}.")
    return list(runs.values())


def _add_result(run: dict[str, Any], row: dict[str, str], line: int, path: Path,
                seen: dict[tuple[str, str], int]) -> None:
    key = (row["name"], row["downstream_dataset"])
    if key in seen:
        raise UserError(f"Lines {seen[key]} and {line} of {path} both hold model '{key[0]}' on "
                        f"'{key[1]}'; keep one row per model and downstream dataset.")
    seen[key] = line
    if row["upstream_dataset"] != run["data"]:
        raise UserError(f"Line {line} of {path} says model '{row['name']}' was trained on "
                        f"'{row['upstream_dataset']}', but {RUNS_FILE} says {run['data']}; use the two files of one "
                        f"snapshot of {SOURCE}.")
    task = TASKS.get(row["task"])
    if task is None:
        raise UserError(f"Line {line} of {path} has task '{row['task']}'; expected one of {', '.join(TASKS)}.")
    samples, gmacs_total = _number(row, "samples_seen", line, path), _number(row, "gmacs_total", line, path)
    if "flops" in run and not (math.isclose(run["samples"], samples, rel_tol=1e-9)
                               and math.isclose(run["gmacs_total"], gmacs_total, rel_tol=1e-9)):
        raise UserError(f"Line {line} of {path} gives model '{row['name']}' samples_seen {samples:g} and "
                        f"gmacs_total {gmacs_total:g}, but an earlier line gave {run['samples']:g} and "
                        f"{run['gmacs_total']:g}; a model's size and length are the same on every line.")
    run.update(samples=samples, gmacs_total=gmacs_total, flops=FLOPS_PER_GMAC_TOTAL * gmacs_total)
    for metric in METRICS:
        if row[metric]:
            run[f"{task}/{row['downstream_dataset']}/{metric}"] = _number(row, metric, line, path)


def _read_table(path: Path, columns: Sequence[str]) -> list[tuple[int, dict[str, str]]]:
    """(line number, row) of a CSV file with at least `columns`; a UserError names a missing column or file."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            missing = [name for name in columns if name not in (reader.fieldnames or [])]
            if missing:
                raise UserError(f"{path} has no column {', '.join(repr(name) for name in missing)}; it should be "
                                f"the file of that name from {SOURCE}.")
            return [(reader.line_num, {k: (v or "").strip() for k, v in row.items()}) for row in reader]
    except FileNotFoundError:
        raise UserError(f"{path} does not exist. Get the study's tables with `git clone {SOURCE}` and give the "
                        f"folder holding {RUNS_FILE} and {RESULTS_FILE}.") from None
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise UserError(f"Cannot read {path}: {error}. It should be the CSV file of that name from {SOURCE}.") from None


def _number(row: dict[str, str], column: str, line: int, path: Path) -> float:
    try:
        value = float(row[column])
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value):
        raise UserError(f"Line {line} of {path} has {row[column]!r} in column '{column}', which must be a finite "
                        f"number; the file may be cut short or edited.")
    return value


def main(argv: Sequence[str] | None = None) -> None:
    convert(argv, module="openclip_study", study="Cherti et al.", series=SERIES, load_study=load_study,
            folder=f"a clone of {SOURCE} (holds {RUNS_FILE}, {RESULTS_FILE})")

if __name__ == "__main__":
    main()
