"""Model references: what `transferlab eval MODEL` accepts.

- a transferlab run directory (its `checkpoints/latest` is used), a checkpoint directory `step_<n>`, or a
  directory written by `transferlab export --to safetensors` (models/exported.py);
- `openclip:<arch>:<pretrained tag>`, `openclip:hf-hub:<repo>`, `openclip:local-dir:<dir>`,
  `openclip:<config>:<checkpoint file>` or `openclip:<config>:random` (models/openclip.py);
- `hf:<directory>`, `hf:<installed package>` or `hf:<hub id>` (sentence-transformers or transformers, models/hf.py);
- `timm:<name>.<tag>` (timm's spelling) or `timm:<name>:<tag>`, `timm:hf-hub:<repo>`, `timm:local-dir:<dir>`,
  `timm:<name>:<weights file>` or `timm:<name>:random` (image-only, models/timm_backbones.py).

A name a library's `create_model` reads as pretrained is read so here too, and random weights are only ever
asked for (`random`, or an open_clip model-config file alone): every encoder says where its weights came
from (`Encoder.weights`, models/weights.py). Loading reads only safetensors, JSON and weights-only torch
files; a reference never runs code from a file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from transferlab.checkpoints import META_FILE, MODEL_FILE, latest_checkpoint, read_checkpoint
from transferlab.config import ModelSpec, Recipe, recipe_from_text
from transferlab.errors import UserError
from transferlab.models import weights as origin
from transferlab.models.dual_encoder import DualEncoder
from transferlab.models.encoder import Encoder, from_dual_encoder
from transferlab.models.exported import CONFIG_FILE, WEIGHTS_FILE, load_exported, read_export_config

FORMS = ("a run directory, a checkpoints/step_<n> directory, an exported model directory, "
         "openclip:<config>:<pretrained tag, checkpoint file or random>, openclip:hf-hub:<repo> or local-dir:<dir>, "
         "hf:<directory, installed package or hub id> or timm:<name>.<tag> or timm:<name>:<tag, file or random>")


@dataclass
class LoadedModel:
    encoder: Encoder
    recipe: Recipe | None = None  # the recipe that trained a transferlab model
    checkpoint: Path | None = None
    run_dir: Path | None = None


def load_model(ref: str, device: torch.device, overrides: list[str] | tuple[str, ...] = ()) -> LoadedModel:
    """The model a reference names, on `device`; for a transferlab model also its recipe (plus overrides)."""
    if ref.startswith("openclip:"):
        from transferlab.models.openclip import load_openclip

        return LoadedModel(load_openclip(ref.removeprefix("openclip:"), device))
    if ref.startswith("hf:"):
        from transferlab.models.hf import load_hf

        return LoadedModel(load_hf(ref.removeprefix("hf:"), device))
    if ref.startswith("timm:"):
        from transferlab.models.timm_backbones import load_timm

        return LoadedModel(load_timm(ref.removeprefix("timm:"), device))
    return _load_transferlab(ref, device, overrides)


def _load_transferlab(ref: str, device: torch.device, overrides) -> LoadedModel:
    path = Path(ref)
    if (path / CONFIG_FILE).is_file():
        model, config = load_exported(path, device), read_export_config(path)
        recipe = recipe_from_text(config["recipe"], f"the recipe saved in {path / CONFIG_FILE}", overrides)
        weights = origin.export(path, path / WEIGHTS_FILE, config.get("source") or {})
        return LoadedModel(from_dual_encoder(model, str(path), weights=weights), recipe)
    if (path / META_FILE).is_file():
        checkpoint, run_dir = path, path.parent.parent
    elif (path / "checkpoints").is_dir() or (path / "config.yaml").is_file():
        checkpoint, run_dir = latest_checkpoint(path), path
        if checkpoint is None:
            raise UserError(f"Run directory {path} has no complete checkpoint (checkpoints/latest is missing). "
                            f"Resume the run with `transferlab pretrain --resume --out {path}` or pass a "
                            f"checkpoints/step_<n> directory.")
    else:
        raise UserError(f"'{ref}' is not a model reference transferlab can load: expected {FORMS}. Check the "
                        f"path or the prefix.")
    meta, weights, _ = read_checkpoint(checkpoint, with_train_state=False)
    model = DualEncoder(ModelSpec.model_validate(meta["model"]))
    try:
        model.load_saved_state_dict(weights)
    except ValueError as err:
        raise UserError(f"{checkpoint}: {err}. The checkpoint was written by a different model definition.") from None
    recipe = recipe_from_text(meta["recipe"], f"the recipe saved in {checkpoint / META_FILE}", overrides)
    model = model.to(device).eval()
    weights = origin.checkpoint(run_dir, checkpoint, meta, MODEL_FILE)
    return LoadedModel(from_dual_encoder(model, str(checkpoint), run_dir, weights), recipe, checkpoint, run_dir)
