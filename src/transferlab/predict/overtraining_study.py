"""The runs of Gadre et al.'s language-model scaling testbed as a runs table.

The study is Gadre et al. 2024, "Language models scale reliably with over-training and on downstream tasks"
(arXiv:2403.08540). Its repository, github.com/mlfoundations/scaling, publishes one pair of JSON files per trained
model (104: six sizes from 0.011B to 6.9B parameters, token multipliers M = tokens / params from 5 to 640, on three
data sets, C4, RedPajama and RefinedWeb):

- `exp_data/models/<run>.json`: `name`, `dataset_name` (c4_original, rpj, rw_original), `hyperparameters` (`model`,
  a config path such as `scaling/open_lm_configs/d=1024_l=24_h=8.json` or a name such as `open_lm_7b`; `params`;
  `tokens`; `chinchilla_multiplier`, M / 20; ...) and `results`, one loss per validation set, each naming its set
  by the folder of its first `val_data` path (`.../c4_val/shard-....tar`; a `de-en` set by its file's name);
- `exp_data/evals/evaluation_<run>_heavy.json`: `eval_metrics.icl`, the accuracy on each downstream task.

`load_study` turns them into one run per row, sorted by data set and compute, the table `transferlab predict` reads:
`run` (the model's `name`), `data` (its `dataset_name`), `model` (the config's file stem: `d=1024_l=24_h=8`,
`open_lm_1b`, ...), `params` (N), `samples` (tokens seen, D), `multiplier` (20 × chinchilla_multiplier, the
study's M), `flops` (6ND, the study's compute), `loss` (the C4 validation loss, `c4_val`, the study's default),
`loss/<set>` for every other validation set (`loss/paloma_redpajama`, `loss/val_de-en_100`, ...),
`icl/avg46/acc1` and `icl/avg17/acc1` (the mean accuracy over the study's 46 downstream tasks and over its 17-task
subset: 1 − these are its `err_avg` and `err_avg_subset`) and `icl/<task>/acc1` for each of the 46 tasks, as
published. Other tasks an evaluation file holds are not the study's and are left out.

The repository is MIT-licensed, so the converted table ships, with the license, in tests/predict/published/gadre2024/
(its README.md gives the command that regenerates it from a clone):

    python -m transferlab.predict.overtraining_study scaling/ runs.csv --data rpj

The held-out protocol `predict` is validated with on it is `HOLDOUT` and `TARGETS` below, used by
benchmarks/predict_published.py --study overtraining and its test.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from transferlab.errors import UserError
from transferlab.predict.study_converter import convert

MODELS_DIR = "exp_data/models"
EVALS_DIR = "exp_data/evals"
SOURCE = "https://github.com/mlfoundations/scaling"
SOURCE_COMMIT = "a003c4913793ac2ae7ef87b28ecb562955d026d5"
DATASETS = ("c4_original", "rpj", "rw_original")
DEFAULT_LOSS = "c4_val"  # the validation set whose loss is the study's (and the table's) `loss`
TOKENS_PER_PARAM = 20  # Chinchilla's compute-optimal ratio; the study's M is 20 × chinchilla_multiplier
# The 46 downstream tasks of the paper (scaling/constants.py's FRIENDLY_CITATIONS) and its 17-task subset (SUBSET).
TASKS = (
    "agi_eval_lsat_ar", "agi_eval_lsat_rc", "agi_eval_lsat_lr", "agi_eval_sat_en", "arc_easy", "arc_challenge", "bbq",
    "bigbench_conceptual_combinations", "bigbench_conlang_translation", "bigbench_cs_algorithms",
    "bigbench_dyck_languages", "bigbench_elementary_math_qa", "bigbench_misconceptions",
    "bigbench_language_identification", "bigbench_logical_deduction", "bigbench_novel_concepts", "bigbench_operators",
    "bigbench_repeat_copy_logic", "bigbench_qa_wikidata", "bigbench_strange_stories", "bigbench_strategy_qa",
    "bigbench_understanding_fables", "boolq", "commonsense_qa", "copa", "coqa", "enterprise_pii_classification",
    "hellaswag", "hellaswag_zeroshot", "jeopardy", "lambada_openai", "logi_qa", "math_qa", "mmlu", "mmlu_zeroshot",
    "openbook_qa", "piqa", "pubmed_qa_labeled", "simple_arithmetic_nospaces", "simple_arithmetic_withspaces", "siqa",
    "squad", "winogender_mc_female", "winogender_mc_male", "winograd", "winogrande",
)
SUBSET = (
    "bigbench_operators", "pubmed_qa_labeled", "hellaswag_zeroshot", "boolq", "arc_easy", "coqa",
    "bigbench_dyck_languages", "lambada_openai", "bigbench_novel_concepts", "winograd", "bigbench_cs_algorithms",
    "commonsense_qa", "bigbench_qa_wikidata", "hellaswag", "copa", "squad", "piqa",
)

# --- the held-out protocol (docs/prediction.md; fixed before any held-out run was predicted) ------------------------
# Each data set is its own series; in each, the 2 runs with the most compute — the 6.9B model at M = 20 and the
# over-trained 1.4B model — are predicted from all the others (overtraining_backtest.py).
HOLDOUT = 2
TARGETS = ("loss", "icl/avg17/acc1", "icl/avg46/acc1")  # the study's loss and its two downstream averages


def load_study(folder: str | Path) -> list[dict[str, Any]]:
    """One run per row (see the module's docstring), sorted by (data, flops)."""
    folder = Path(folder)
    models = sorted((folder / MODELS_DIR).glob("*.json"))
    if not models:
        raise UserError(f"{folder / MODELS_DIR} holds no model JSON files. Give the folder of a clone of {SOURCE} "
                        f"(`git clone {SOURCE}`), the one holding {MODELS_DIR} and {EVALS_DIR}.")
    runs: dict[str, dict[str, Any]] = {}
    files: dict[str, Path] = {}
    for path in models:
        run = _model_run(path)
        if run["run"] in runs:
            raise UserError(f"{files[run['run']]} and {path} both have name '{run['run']}'; keep one model JSON "
                            f"per run.")
        files[run["run"]] = path
        evaluation = folder / EVALS_DIR / f"evaluation_{path.stem}_heavy.json"
        if not evaluation.exists():
            raise UserError(f"{evaluation} does not exist, so model {path} has no downstream accuracies; use the "
                            f"{MODELS_DIR} and {EVALS_DIR} of one snapshot of {SOURCE}.")
        runs[run["run"]] = run | _accuracies(evaluation)
    return sorted(runs.values(), key=lambda run: (run["data"], run["flops"], run["run"]))


def _model_run(path: Path) -> dict[str, Any]:
    model = _read_json(path)
    hyper = _key(model, "hyperparameters", path)
    params, tokens, multiplier = (_number(hyper, key, path, "hyperparameters.")
                                  for key in ("params", "tokens", "chinchilla_multiplier"))
    run = {"run": str(_key(model, "name", path)), "data": str(_key(model, "dataset_name", path)),
           "model": PurePosixPath(str(_key(hyper, "model", path, "hyperparameters."))).stem,
           "params": params, "samples": tokens, "multiplier": TOKENS_PER_PARAM * multiplier,
           "flops": 6 * params * tokens}
    losses = _losses(_key(model, "results", path), path)
    if "loss" not in losses:
        raise UserError(f"{path} has no entry in 'results' whose val_data is in a '{DEFAULT_LOSS}' folder, so no C4 "
                        f"loss, the study's default; use the model JSON of one snapshot of {SOURCE}.")
    return run | {"loss": losses.pop("loss")} | losses


def _losses(results: Any, path: Path) -> dict[str, float]:
    """`loss` (the C4 validation loss) and `loss/<set>` of every other set, named as the study names them."""
    if not isinstance(results, list):
        raise UserError(f"Key 'results' of {path} is not a list of validation results; use the model JSON of one "
                        f"snapshot of {SOURCE}.")
    losses: dict[str, float] = {}
    for index, result in enumerate(results):
        key = f"results[{index}]."
        val_data = _key(result, "val_data", path, key) if isinstance(result, dict) else None
        if not (isinstance(val_data, list) and val_data and isinstance(val_data[0], str)):
            raise UserError(f"Key '{key}val_data' of {path} is not a list of validation file paths; use the model "
                            f"JSON of one snapshot of {SOURCE}.")
        first = PurePosixPath(val_data[0])
        name = first.name.split(".")[0] if "de-en" in first.parent.name else first.parent.name
        column = "loss" if name == DEFAULT_LOSS else f"loss/{name}"
        if column in losses:
            raise UserError(f"{path} holds two losses on validation set '{name}' (the second at '{key}val_data'); "
                            f"keep one result per validation set.")
        losses[column] = _number(result, "loss", path, key)
    return losses


def _accuracies(path: Path) -> dict[str, float]:
    """The two averages and the accuracy on each of the 46 tasks, from one evaluation file."""
    icl = _key(_key(_read_json(path), "eval_metrics", path), "icl", path, "eval_metrics.")
    accuracies = {}
    for task in TASKS:
        if not isinstance(icl, dict) or task not in icl:
            which = "the 46 and of the 17-task subset" if task in SUBSET else "the 46"
            raise UserError(f"{path} has no accuracy for task '{task}' (key 'eval_metrics.icl.{task}'), one of "
                            f"{which} the study averages; use the evaluation file of one snapshot of {SOURCE}.")
        accuracies[task] = _number(icl, task, path, "eval_metrics.icl.")
    return {"icl/avg46/acc1": sum(accuracies.values()) / len(TASKS),
            "icl/avg17/acc1": sum(accuracies[task] for task in SUBSET) / len(SUBSET),
            **{f"icl/{task}/acc1": value for task, value in accuracies.items()}}


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise UserError(f"{path} is not valid JSON ({error.msg} at line {error.lineno}); it should be the file of "
                        f"that name from {SOURCE}.") from None
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"Cannot read {path}: {error}. It should be the file of that name from {SOURCE}.") from None


def _key(mapping: Any, key: str, path: Path, prefix: str = "") -> Any:
    if not isinstance(mapping, dict) or key not in mapping:
        raise UserError(f"{path} has no key '{prefix}{key}'; it should be the file of that name from {SOURCE}.")
    return mapping[key]


def _number(mapping: Any, key: str, path: Path, prefix: str = "") -> float:
    value = _key(mapping, key, path, prefix)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise UserError(f"Key '{prefix}{key}' of {path} is {value!r}, which must be a finite number; the file may be "
                        f"cut short or edited.")
    return float(value)


def main(argv: Sequence[str] | None = None) -> None:
    convert(argv, module="overtraining_study", study="Gadre et al.", series=DATASETS, load_study=load_study,
            folder=f"a clone of {SOURCE} (holds {MODELS_DIR}, {EVALS_DIR})")

if __name__ == "__main__":
    main()
