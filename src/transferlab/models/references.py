"""Model references: what `transferlab eval MODEL` accepts.

- a run directory (its `checkpoints/latest` is used) or a checkpoint directory `checkpoints/step_<n>`.

Loading reads only safetensors and JSON; a reference never causes code from a file to run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from transferlab.config import ModelSpec, Recipe, recipe_from_text
from transferlab.errors import UserError
from transferlab.models.dual_encoder import DualEncoder
from transferlab.train.checkpoint import META_FILE, latest_checkpoint, read_checkpoint


@dataclass
class LoadedModel:
    model: DualEncoder
    recipe: Recipe  # the recipe that trained it
    checkpoint: Path
    run_dir: Path


def load_model(ref: str | Path, device: torch.device, overrides: list[str] | tuple[str, ...] = ()) -> LoadedModel:
    """Load the model a reference names, on `device`, with the recipe that trained it (plus `overrides`)."""
    path = Path(ref)
    if (path / META_FILE).is_file():
        checkpoint, run_dir = path, path.parent.parent
    elif (path / "checkpoints").is_dir() or (path / "config.yaml").is_file():
        checkpoint, run_dir = latest_checkpoint(path), path
        if checkpoint is None:
            raise UserError(f"Run directory {path} has no complete checkpoint (checkpoints/latest is missing). "
                            f"Resume the run with `transferlab pretrain --resume --out {path}` or pass a "
                            f"checkpoints/step_<n> directory.")
    else:
        raise UserError(f"'{ref}' is not a model reference transferlab can load: expected a run directory "
                        f"(with checkpoints/) or a checkpoint directory (with meta.json). Check the path.")
    meta, weights, _ = read_checkpoint(checkpoint, with_train_state=False)
    model = DualEncoder(ModelSpec.model_validate(meta["model"]))
    try:
        model.load_saved_state_dict(weights)
    except ValueError as err:
        raise UserError(f"{checkpoint}: {err}. The checkpoint was written by a different model definition.") from None
    recipe = recipe_from_text(meta["recipe"], f"the recipe saved in {checkpoint / META_FILE}", overrides)
    return LoadedModel(model.to(device).eval(), recipe, checkpoint, run_dir)
