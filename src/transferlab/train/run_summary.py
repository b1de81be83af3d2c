"""Runs register themselves: `transferlab run` appends one line per finished run to `runs.jsonl` beside its
run directory (`<out>/../runs.jsonl`), the table `transferlab predict` fits scaling laws to.

A line holds what a scaling law needs: `params` (trainable parameters, N), `samples` (samples seen, D =
steps × global batch), `flops` (≈ 3 × the forward FLOPs of one training sample × D, counted by torch's
FlopCounterMode: one image through the image tower and projection, and one caption through a text tower
that trains; a locked tower's features are computed once, not per step), `loss` (the last logged training
loss) and every downstream metric of the run's results.json as `<task>/<dataset>/<metric>`, e.g.
`linear_probe/digits/acc1`; plus the run directory, the recipe's name, the image tower and its options.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from transferlab.config import Recipe
from transferlab.fileio import read_jsonl_log
from transferlab.models.dual_encoder import DualEncoder
from transferlab.predict.runs_table import append_run

SAMPLE_CAPTION = "a photo of the number seven."


def register_run(run_dir: Path, model: DualEncoder, recipe: Recipe, results: dict) -> Path:
    """Append the run's line to <run_dir>/../runs.jsonl; the table's path."""
    return append_run(Path(run_dir).resolve().parent / "runs.jsonl", run_record(run_dir, model, recipe, results))


def run_record(run_dir: Path, model: DualEncoder, recipe: Recipe, results: dict) -> dict:
    spec = recipe.train
    samples = spec.steps * spec.batch_size
    losses = [line["loss"] for line in read_jsonl_log(Path(run_dir) / "metrics.jsonl") if line.get("loss") is not None]
    record = {"run": str(Path(run_dir).resolve()), "recipe": recipe.name,
              "image_tower": None if recipe.model.image is None else recipe.model.image.name,
              "image_options": None if recipe.model.image is None else recipe.model.image.options,
              "params": sum(p.numel() for p in model.parameters() if p.requires_grad),
              "samples": samples, "flops": 3 * forward_flops_per_sample(model) * samples,
              "loss": losses[-1] if losses else None}
    for task in results.get("tasks", []):
        for name, value in task["metrics"].items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                record[f"{task['task']}/{task['dataset']}/{name}"] = value
    return record


@torch.no_grad()
def forward_flops_per_sample(model: DualEncoder) -> int:
    """FLOPs of one sample's forward pass through the parts of the model that train."""
    was_training = model.training
    model.eval()
    device = model.logit_scale.device
    counter = FlopCounterMode(display=False)
    with counter:
        if model.image_tower is not None:
            spec = model.spec
            model.encode_image(torch.zeros(1, spec.channels, spec.image_size, spec.image_size, device=device))
        for query in (False, True):
            tower = model.query_tower if query else model.text_tower
            if tower is not None and not model.text_frozen(query):
                model.encode_text([SAMPLE_CAPTION], query=query)
    model.train(was_training)
    return counter.get_total_flops()
