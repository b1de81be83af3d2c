"""A transferlab model exported with `transferlab export RUN --to safetensors`: the weights and the model's
definition, loadable without the run directory, its checkpoints or transferlab's training code.

`DIR/model.safetensors` holds every weight (locked pretrained towers included, unlike a checkpoint, so the
file alone is the model); `DIR/transferlab_model.json` holds the model spec (towers, sizes, mean and std),
the recipe it was trained with and where it came from. `load_exported(DIR)` builds the DualEncoder from the
spec and loads the weights with strict keys; `transferlab eval DIR` and `transferlab.load_model(DIR)` use it.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from transferlab.config import ModelSpec
from transferlab.errors import UserError
from transferlab.models.dual_encoder import DualEncoder

CONFIG_FILE = "transferlab_model.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT = "transferlab-model/1"


def read_export_config(directory: Path) -> dict:
    path = Path(directory) / CONFIG_FILE
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise UserError(f"{path} cannot be read ({err}). Export the run again with transferlab export.") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise UserError(f"{path} is not a transferlab model export (format {FORMAT}); it says "
                        f"{config.get('format') if isinstance(config, dict) else type(config).__name__}.")
    return config


def load_exported(directory: str | Path, device: str | torch.device = "cpu") -> DualEncoder:
    """The DualEncoder exported into `directory`, in eval mode on `device`."""
    directory = Path(directory)
    config = read_export_config(directory)
    model = DualEncoder(ModelSpec.model_validate(config["model"]))
    try:
        weights = load_file(str(directory / WEIGHTS_FILE))
        model.load_state_dict(weights, strict=True)
    except (OSError, RuntimeError) as err:
        first_line = (str(err).strip().splitlines() or [""])[0][:300]
        raise UserError(f"{directory / WEIGHTS_FILE} does not hold the weights of the model in {CONFIG_FILE} "
                        f"({type(err).__name__}: {first_line}). Export the run again.") from None
    return model.to(device).eval()
