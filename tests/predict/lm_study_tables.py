"""Files in the published format of Gadre et al.'s study (exp_data/models/<run>.json and
exp_data/evals/evaluation_<run>_heavy.json), made up, with values simple enough to work out by hand."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from transferlab.predict.overtraining_study import SUBSET, TASKS

# (data set, model config, params, tokens, chinchilla_multiplier)
RUNS = [("rpj", "scaling/open_lm_configs/d=96_l=8_h=4.json", 10_000_000, 800_000_000, 4.0),
        ("c4_original", "open_lm_1b", 1_000_000_000, 5_000_000_000, 0.25),
        ("rpj", "scaling/open_lm_configs/d=96_l=8_h=4.json", 10_000_000, 200_000_000, 1.0)]
# A validation set's loss is `C4_LOSS + offset`; c4_val comes second, as in the study's files.
VAL_SETS = {"training/eval_data/val_tok_mult/openlm/shard_00000000.tar": 1.0,
            "training/eval_data/c4_val/shard-{0000000..0000010}.tar": 0.0,
            "training/eval_data/val_tok_mult/paloma_ptb/00000001.tar": 2.0,
            "training/eval_data/val_tok_mult/de-en/val_de-en_100.tar": 3.0}
C4_LOSS = 3.5
SUBSET_ACC, OTHER_ACC, EXTRA_ACC = 0.6, 0.3, 1.0  # the 17 tasks, the other 29 of the 46, a task outside the 46


def run_name(data: str, model: str, multiplier: float) -> str:
    return f"{data}-{Path(model).stem}-{multiplier}"


def write_study(folder: Path) -> Path:
    """A study folder holding exp_data/ with RUNS; returns `folder`."""
    for data, model, params, tokens, multiplier in RUNS:
        name = run_name(data, model, multiplier)
        results = [{"loss": C4_LOSS + offset, "loss_sequences_upper_95": 9.0, "val_data": [val], "model": "x"}
                   for val, offset in VAL_SETS.items()]
        write_json(folder / "exp_data/models" / f"{name}.json", {
            "name": name, "dataset_name": data,
            "hyperparameters": {"model": model, "tokens": tokens, "params": params, "params_no_embed": params // 2,
                                "chinchilla_multiplier": multiplier, "lr": 0.003},
            "results": results})
        icl = {task: SUBSET_ACC if task in SUBSET else OTHER_ACC for task in TASKS} | {"extra_task": EXTRA_ACC}
        write_json(folder / "exp_data/evals" / f"evaluation_{name}_heavy.json",
                   {"name": "heavy", "model": Path(model).stem, "eval_metrics": {"icl": icl}})
    return folder


def write_json(path: Path, value: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=4))


def edit_json(path: Path, change: Callable[[Any], object]) -> None:
    """Read `path`, let `change` edit the value in place, write it back."""
    value = json.loads(path.read_text())
    change(value)
    write_json(path, value)
