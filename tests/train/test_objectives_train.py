"""Every built-in recipe (one per objective and optimizer) and training option trains: the loss falls."""

import json

import pytest
import torch

from transferlab.config import builtin_recipes, load_recipe
from transferlab.train.loop import pretrain

OPTIONS = {
    "label-smoothing": ["train.label_smoothing=0.1"],
    "cooldown-ema": ["train.schedule=constant_cooldown", "train.ema_decay=0.9"],
    "grad-cache": ["train.chunk_size=8"],
    "accumulate": ["train.chunk_size=8", "train.large_batch=accumulate"],
    "bf16": ["train.precision=bf16"],
    "vit-checkpointing-layer-decay": ["model.image.name=vit-tiny", "model.grad_checkpointing=true",
                                      "train.layer_decay=0.8"],
    "partly-locked-text": ["model.text.locked=true", "model.text.unlocked_blocks=1"],
}
TINY_TEXT = ("model.text.name=", "model.text.locked=")


def tiny(recipe: str, tiny_overrides: list[str], extra: list[str]):
    """A recipe at test size: tiny towers, 24 steps of 32 samples."""
    keep = [o for o in tiny_overrides if not o.startswith(("train.steps", "train.log_every"))]
    model = load_recipe(recipe).model
    if model.text is None:
        keep = [o for o in keep if not o.startswith(TINY_TEXT)]
    if model.image is None:  # text-text: the tiny text tower on both sides
        keep = [o for o in keep if not o.startswith("model.image.")] + ["model.text.unlocked_blocks=0"]
    sizes = ["train.steps=24", "train.log_every=4", "train.warmup_steps=2", "train.batch_size=32",
             "train.chunk_size=null", "train.look.bank_size=256", "train.look.k=10"]
    return load_recipe(recipe, keep + sizes + extra)


def assert_loss_falls(run_dir) -> None:
    losses = [json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert min(losses[-2:]) < losses[0], losses


@pytest.mark.parametrize("recipe", builtin_recipes())
def test_every_builtin_recipe_trains(recipe, tiny_overrides, tmp_path):
    pretrain(tiny(recipe, tiny_overrides, []), tmp_path)
    assert_loss_falls(tmp_path)


@pytest.mark.parametrize("option", list(OPTIONS))
def test_every_training_option_trains(option, tiny_overrides, tmp_path):
    pretrain(tiny("default", tiny_overrides, OPTIONS[option]), tmp_path)
    assert_loss_falls(tmp_path)
