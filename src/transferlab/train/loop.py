"""Contrastive pretraining of a dual encoder, top to bottom.

`pretrain(recipe, run_dir)` loads the training split, builds the model and optimizer, resumes from
`checkpoints/latest` when asked, embeds a locked text tower's captions once, and then for each step:
picks the batch from the epoch's seeded permutation, augments it with the step's seeded generator, picks
one caption per image, and takes one AdamW step on the CLIP loss. Because the data order is a function of
(seed, epoch) and all per-step randomness a function of (seed, step), a resumed run repeats exactly the
steps an uninterrupted run would have taken.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch
from tqdm import tqdm

from transferlab.config import Recipe, dump_recipe
from transferlab.data.captions import CaptionTable
from transferlab.data.dataset import ImageTextData
from transferlab.data.sources import load_splits
from transferlab.data.transforms import augment, normalize, to_unit
from transferlab.errors import UserError
from transferlab.losses import clip_loss
from transferlab.models.dual_encoder import DualEncoder
from transferlab.optim import build_optimizer, lr_at
from transferlab.runtime import derived_generator, resolve_device, seed_everything
from transferlab.train.checkpoint import (
    latest_checkpoint,
    optimizer_state,
    read_checkpoint,
    restore_optimizer,
    restore_rng,
    rng_state,
    save_checkpoint,
)
from transferlab.train.logging import MetricsLogger, flatten


def pretrain(recipe: Recipe, run_dir: Path, resume: bool = False) -> DualEncoder:
    """Train `recipe` into `run_dir` and return the final model."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    spec = recipe.train
    device = resolve_device(recipe.device)
    seed_everything(recipe.seed)

    # ---- data: the training split, decoded once, with its deduplicated captions
    data = load_splits(spec.data, recipe.datasets[spec.data], recipe.model.image_size, recipe.model.channels)["train"]
    if len(data) < spec.batch_size:
        raise UserError(f"train.batch_size is {spec.batch_size} but the train split of '{spec.data}' has only "
                        f"{len(data)} samples. Lower train.batch_size or add data.")
    captions = CaptionTable(data.captions)
    positive_ids = _positive_ids(data, captions, spec.positives)
    images = data.images.to(device)
    steps_per_epoch = len(data) // spec.batch_size  # the last partial batch of an epoch is dropped

    # ---- model and optimizer, restored from the latest checkpoint when resuming
    model = DualEncoder(recipe.model).to(device)
    optimizer = build_optimizer(model, spec)
    start = 0
    if resume:
        checkpoint = latest_checkpoint(run_dir)
        if checkpoint is None:
            raise UserError(f"--resume was given but {run_dir}/checkpoints has no complete checkpoint yet. "
                            f"Start the run again without --resume (into an empty --out directory).")
        meta, weights, state = read_checkpoint(checkpoint)
        model.load_saved_state_dict(weights)
        restore_optimizer(optimizer, state, meta["optimizer_param_groups"])
        restore_rng(state, meta["rng"])
        start = meta["step"]
    model.train()

    # ---- LiT: a locked text tower sees each distinct caption once, not once per step
    text_cache = None
    if model.locked_text:
        with torch.no_grad():
            text_cache = model.text_features(captions.texts)

    logger = MetricsLogger(run_dir, recipe.logging, flatten(recipe.model_dump(mode="json")), start_step=start)
    window_loss, window_start, window_steps = torch.zeros((), device=device), time.perf_counter(), 0
    order, order_epoch = None, -1
    progress = tqdm(range(start, spec.steps), initial=start, total=spec.steps, desc="pretrain", unit="step",
                    dynamic_ncols=True)
    for step in progress:
        # ---- batch: seeded permutation per epoch, seeded augmentation and caption choice per step
        epoch, position = divmod(step, steps_per_epoch)
        if epoch != order_epoch:
            order = torch.randperm(len(data), generator=derived_generator(recipe.seed, "order", epoch))
            order_epoch = epoch
        index = order[position * spec.batch_size:(position + 1) * spec.batch_size]
        generator = derived_generator(recipe.seed, "step", step)
        batch = normalize(augment(to_unit(images[index.to(device)]), spec.augment, generator),
                          recipe.model.mean, recipe.model.std)
        caption_ids = captions.sample(index, generator)
        if text_cache is not None:
            text_features = text_cache[caption_ids.to(device)]
        else:
            text_features = model.text_features([captions.texts[i] for i in caption_ids.tolist()])
        ids = None if positive_ids is None else positive_ids[index].to(device)

        # ---- one optimizer step on the CLIP loss
        lr = lr_at(step, spec.lr, spec.steps, spec.warmup_steps, spec.schedule)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss = clip_loss(model.encode_image(batch), model.project_text(text_features), model.logit_scale.exp(),
                         positive_ids=ids)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if spec.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), spec.grad_clip)
        optimizer.step()
        with torch.no_grad():  # as in CLIP: the temperature may not fall below 1 / max_logit_scale
            model.logit_scale.clamp_(0, math.log(recipe.model.max_logit_scale))
        window_loss += loss.detach()
        window_steps += 1

        # ---- log and checkpoint (the only places that wait for the device)
        done = step + 1
        if done % spec.log_every == 0 or done == spec.steps:
            seconds = time.perf_counter() - window_start
            values = {"epoch": epoch, "loss": (window_loss / window_steps).item(), "lr": lr,
                      "logit_scale": model.logit_scale.exp().item(),
                      "samples_per_s": window_steps * spec.batch_size / seconds}
            logger.log(done, values)
            progress.set_postfix(loss=f"{values['loss']:.3f}")
            window_loss.zero_()
            window_start, window_steps = time.perf_counter(), 0
        if done % spec.checkpoint_every == 0 or done == spec.steps:
            _checkpoint(run_dir, done, model, optimizer, recipe)
    progress.close()
    logger.close()
    model.eval()
    return model


def _positive_ids(data: ImageTextData, captions: CaptionTable, mode: str) -> torch.Tensor | None:
    """Which samples' captions count as matches of each other in the loss (None: only the pair)."""
    if mode == "pair":
        return None
    if mode in ("label", "auto") and data.labels is not None:
        return data.labels
    if mode == "label":
        raise UserError(f"train.positives is 'label' but dataset '{data.name}' has no labels. Use 'caption' "
                        f"(identical captions match), 'pair' or 'auto'.")
    return captions.table[:, 0]  # samples whose first caption is the same text


def _checkpoint(run_dir: Path, step: int, model: DualEncoder, optimizer: torch.optim.Optimizer,
                recipe: Recipe) -> Path:
    optim_tensors, param_groups = optimizer_state(optimizer)
    rng_tensors, rng_json = rng_state()
    meta = {"model": recipe.model.model_dump(mode="json"), "optimizer_param_groups": param_groups,
            "rng": rng_json, "recipe": dump_recipe(recipe)}
    return save_checkpoint(run_dir, step, model.saved_state_dict(), {**optim_tensors, **rng_tensors}, meta)
