"""Resuming a pretraining run: what its checkpoints hold, how a resumed run takes them back, and which recipe keys
a resume may change.

`save_training(training, step)` writes checkpoints/step_<step> (the directory format is checkpoints.py's, the
optimizer's and the random generators' tensors train_state.py's): the weights (with EMA on, the averaged ones, the
training weights going into the train state), the optimizer, the objective's state (LOOK's bank, ...), the RNGs, the
grad scaler, the count of skipped steps and, for streamed data, the samples skipped so far and the whole-shard
readers' cursors. `restore_training(training)` puts the newest undamaged checkpoint back into a freshly built
`Training` (train/loop.py). Both read the run's parts from the `Training` that holds them.

The checkpoint means something only under the recipe that wrote it, so a resumed run's recipe may differ from the
saved config.yaml only in RESUME_SETTABLE keys (`resumed_recipe`, for `--resume`): nothing that alters what its
weights and states mean.
"""

from __future__ import annotations

import shutil
import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm import tqdm

from transferlab import distributed
from transferlab.checkpoints import read_newest_usable, save_checkpoint
from transferlab.config import Recipe, dump_recipe, load_recipe
from transferlab.errors import UserError
from transferlab.fileio import atomic_write
from transferlab.train.data_report import record_data_reports
from transferlab.train.logging import flatten
from transferlab.train.train_state import optimizer_state, restore_optimizer, restore_rng, rng_state

if TYPE_CHECKING:  # the loop builds a Training and calls these with it
    from transferlab.train.loop import Training

# what a resumed run may change: nothing that alters what its checkpoints' weights and states mean
RESUME_SETTABLE = ("device=", "train.lr=", "train.grad_clip=", "train.precision=", "train.tf32=",
                   "train.max_bad_steps=", "train.steps=", "train.log_every=", "train.checkpoint_every=",
                   "train.keep_checkpoints=", "train.profile_steps=")


def resumed_recipe(out: Path, recipe_ref: str | None, overrides: list[str]) -> Recipe:
    """The recipe to continue `out` with: RECIPE (or, without one, the saved config.yaml) plus the overrides, which
    may differ from the saved config only in RESUME_SETTABLE keys. So the command line that started a run also
    continues it; a changed key is refused by name. The saved config is kept beside an updated one."""
    saved = load_recipe(out / "config.yaml")
    recipe = load_recipe(out / "config.yaml" if recipe_ref is None else recipe_ref, overrides)
    before, after = (flatten(r.model_dump(mode="json")) for r in (saved, recipe))
    changed = sorted(key for key in before.keys() | after.keys() if before.get(key) != after.get(key))
    refused = [key for key in changed if not f"{key}=".startswith(RESUME_SETTABLE)]
    if refused:
        shown = "; ".join(f"{key}: {before.get(key)!r} → {after.get(key)!r}" for key in refused[:6])
        raise UserError(f"--resume continues {out}, whose saved config.yaml differs from this command's recipe in "
                        f"{len(refused)} key(s) a resumed run may not change ({shown}). Only "
                        f"{', '.join(k.rstrip('=') for k in RESUME_SETTABLE)} may change; pass the recipe and --set "
                        f"options the run started with, or start a new run in a new --out directory.")
    if changed and changed != ["device"]:  # the old config is kept beside the new one
        shutil.copy2(out / "config.yaml", out / f"config.before-{datetime.now().strftime('%Y%m%d-%H%M%S')}.yaml")
        atomic_write(out / "config.yaml", dump_recipe(recipe))
    return recipe


def restore_training(training: Training) -> dict:
    """Restore the newest undamaged checkpoint of the run into `training` (damaged ones are reported and passed
    over); its meta.json: the step, the streamed samples skipped until then, and the readers' cursors when reading
    whole shards."""
    main = training.world.main
    _, meta, weights, state = read_newest_usable(training.run_dir, warn=lambda message: main and tqdm.write(
        message, file=sys.stderr))
    training.bad.total = meta.get("skipped_steps", 0)
    ema, scaler = training.ema, training.scaler
    if ema is not None:  # model.safetensors holds the EMA weights; the training weights are in the state
        weights = {k.removeprefix("live."): v for k, v in state.items() if k.startswith("live.")}
        ema.load_state_dict({k.removeprefix("ema."): v for k, v in state.items() if k.startswith("ema.")})
    training.model.load_saved_state_dict(distributed.shard_like(weights, training.model.state_dict()))
    training.objective.load_state_dict({k.removeprefix("objective."): v for k, v in state.items()
                                        if k.startswith("objective.")})
    restore_optimizer(training.optimizer, state, meta["optimizer_param_groups"])
    if scaler is not None:
        scaler.load_state_dict(meta["grad_scaler"])
    restore_rng(state, meta["rng"])
    return meta


def save_training(training: Training, step: int) -> Path:
    """Rank 0 writes checkpoints/step_<step> (every rank holds the same state, or FSDP shards of it, which every
    rank helps gather) while the others wait; its path."""
    model, ema, scaler, world, feed = training.model, training.ema, training.scaler, training.world, training.feed
    optim_tensors, param_groups = optimizer_state(training.optimizer)
    optim_tensors = distributed.full_tensors(optim_tensors)
    rng_tensors, rng_json = rng_state()
    state = {**optim_tensors, **rng_tensors,
             **{f"objective.{k}": v for k, v in training.objective.state_dict().items()}}
    weights = distributed.full_tensors(model.saved_state_dict())
    stream_skipped = feed.all_skipped() if feed.streamed else None
    cursors = feed.all_cursors()
    if not world.main:
        distributed.barrier()
        return Path(training.run_dir) / "checkpoints" / f"step_{step}"
    if ema is not None:
        state.update({f"live.{k}": v for k, v in weights.items()})
        state.update({f"ema.{k}": v for k, v in ema.state_dict().items()})
        with ema.applied(model):
            weights = {k: v.clone() for k, v in model.saved_state_dict().items()}
    recipe = training.recipe
    meta = {"model": recipe.model.model_dump(mode="json"), "optimizer_param_groups": param_groups,
            "rng": rng_json, "recipe": dump_recipe(recipe), "ema": ema is not None,
            "grad_scaler": None if scaler is None else scaler.state_dict(), "skipped_steps": training.bad.total,
            "world_size": world.size, "stream_skipped": stream_skipped or {},
            **({"stream_cursors": cursors} if cursors is not None else {})}
    if stream_skipped is not None:
        record_data_reports(training.run_dir, training.mixture.reports, stream_skipped)
    path = save_checkpoint(training.run_dir, step, weights, state, meta, keep=recipe.train.keep_checkpoints)
    distributed.barrier()
    return path
