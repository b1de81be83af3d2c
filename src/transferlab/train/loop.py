"""Pretraining of a dual encoder, top to bottom.

`pretrain(recipe, run_dir)` loads the training split, builds the model, the objective and the optimizer,
resumes from `checkpoints/latest` when asked, embeds a locked text tower's captions once, and then for
each step: makes the step's batch (a pure function of the step number), back-propagates the objective's
loss (in chunks when `train.chunk_size` is set, with exact full-batch gradients), and takes one optimizer
step. Because every random draw of a step is a function of (seed, step), a resumed run repeats exactly
the steps an uninterrupted run would have taken. A step with a non-finite loss or gradient is skipped, and
SIGTERM/SIGINT stop the run at a step boundary with a checkpoint (train/guards.py). On a GPU the host never
waits for the device inside a step: a batch's tensors reach it through pinned memory with non-blocking copies,
the verdict on a non-finite step stays on the device (train/device.py), and values are read back only at log
and checkpoint steps; float32 matrix products may use TF32 (`train.tf32`).

`pretrain` is the loop itself, in a screenful: set up, then per step the batch, the learning rate, the
optimizer step, the log line and the checkpoint. `Training` holds the run's parts (set up in that order in
its constructor) and does each of those steps; the functions below it are their pieces. What a checkpoint holds,
how a resumed run restores it and which recipe keys a resume may change are train/resume.py's.

Under torchrun every rank runs this same function on its shard of each global batch (train/batches.py);
the objective's loss sees the global batch (train/objectives.py), BatchNorm normalises over the global
batch, and the ranks' gradients are averaged after the step's backward passes, so every rank takes the
single-process step and holds the same weights. The ranks agree on each step's loss and on a stop signal
in one small all-reduce; rank 0 alone writes the run directory (logs, data report, checkpoints).
"""

from __future__ import annotations

import contextlib
import functools
import math
import signal
import time
from pathlib import Path

import torch
from tqdm import tqdm

from transferlab import distributed
from transferlab.config import IMAGE_ONLY_OBJECTIVES, Recipe
from transferlab.data.captions import CaptionTable, StepCaptions, caption_table
from transferlab.data.mixture import MixtureSampler, load_training_data
from transferlab.data.readers.text_pairs import TextPairData
from transferlab.data.stream.loader import decode_all
from transferlab.data.stream.permutation import first_of
from transferlab.data.stream.whole_shards import ShardPool
from transferlab.errors import Interrupted, UserError
from transferlab.models.dual_encoder import DualEncoder
from transferlab.optim import ModelEMA, create_optimizer, layer_decay_groups, lr_at, parameter_groups
from transferlab.runtime import seed_everything, tf32_matmuls
from transferlab.train.batches import BatchMaker
from transferlab.train.compilation import compile_towers, uncompile
from transferlab.train.data_report import record_data_reports
from transferlab.train.device import channels_last_towers, step_if
from transferlab.train.feed import DataFeed
from transferlab.train.guards import BadSteps, StopSignals
from transferlab.train.large_batch import backward_step
from transferlab.train.logging import MetricsLogger, flatten
from transferlab.train.objectives import Batch, build_objective
from transferlab.train.profiling import StepProfiler
from transferlab.train.resume import restore_training, save_training
from transferlab.train.text_rows import TextRows


def pretrain(recipe: Recipe, run_dir: Path, resume: bool = False) -> DualEncoder:
    """Train `recipe` into `run_dir` and return the final model (EMA weights when EMA is on)."""
    training = Training(recipe, Path(run_dir), resume)
    spec = recipe.train
    with StopSignals() as stop, training:
        for step in training.progress:
            batch = training.batch(step)
            lr = training.set_lr(step)
            training.step(step, batch, stop)

            # ---- log and checkpoint (the only places that wait for the device, but, under torchrun, the ranks'
            # agreement on the loss; the bad-step counts are read here, so a run stops at the first of them after
            # train.max_bad_steps bad steps in a row, none of the steps since applied)
            training.profiler.phase("log+checkpoint")
            done = step + 1
            if done % spec.log_every == 0 or done == spec.steps:
                training.log(done, lr)
            saved = training.save(done) if done % spec.checkpoint_every == 0 or done == spec.steps else None
            if training.bad.exhausted:
                raise training.bad.error(saved or training.save(done))
            if stop.received is not None:
                raise Interrupted(stop.received, done, saved or training.save(done))
            training.profiler.step()
    return training.final_model()


class Training:
    """A pretraining run's parts, set up in order, and what the loop does with them at each step. Leaving it (a
    context manager) closes the profiler, the progress bar and the metrics log."""

    def __init__(self, recipe: Recipe, run_dir: Path, resume: bool) -> None:
        self.recipe, self.run_dir, self.spec = recipe, run_dir, recipe.train
        spec = self.spec
        self.world = world = distributed.start()
        if world.main:
            run_dir.mkdir(parents=True, exist_ok=True)
        self.device = device = distributed.local_device(recipe.device)
        seed_everything(recipe.seed)
        self.autocast, self.scaler = _precision(spec.precision, device)

        # ---- data: the training split (of every dataset of a mixture, combined), decoded once or indexed, with its
        # deduplicated captions; a mixture draws each step's sources from its weights (data/mixture.py); read from
        # whole shards (sampling: shards), a pool of which nothing is known until its shards stream
        self.mixture = mixture = load_training_data(recipe)
        data = mixture.data
        shards = isinstance(data, ShardPool)
        if not shards and len(data) < spec.batch_size:
            raise UserError(f"train.batch_size is {spec.batch_size} but the train split of '{data.name}' has only "
                            f"{len(data)} samples. Lower train.batch_size or add data.")
        if world.main:
            record_data_reports(run_dir, mixture.reports)
        self.sampler = MixtureSampler.for_recipe(spec, recipe.seed, mixture) if spec.mixture else None
        pairs = isinstance(data, TextPairData)
        image_only = spec.objective in IMAGE_ONLY_OBJECTIVES
        captions = None if image_only else CaptionTable([[t] for t in data.right]) if pairs else \
            StepCaptions() if shards else caption_table(data.captions)
        queries = CaptionTable([[t] for t in data.left]) if pairs else None
        _check_positives(data, captions, spec.positives)

        # ---- model, objective, optimizer and EMA, restored from the latest checkpoint when resuming
        self.model = model = build_model(recipe, device, world)
        classes = None if pairs or data.classnames is None else len(data.classnames)
        self.objective = objective = build_objective(spec, recipe.model.embed_dim, classes).to(device)
        trainable = torch.nn.ModuleDict({"model": model, "objective": objective})
        groups = (parameter_groups(model, spec.weight_decay) if spec.layer_decay is None
                  else layer_decay_groups(model, spec.lr, spec.weight_decay, spec.layer_decay))
        groups += [g for g in parameter_groups(objective, spec.weight_decay) if g["params"]]
        self.optimizer = create_optimizer(spec.optimizer, groups, spec.lr, spec.betas, spec.eps)
        self.ema = None if spec.ema_decay is None else ModelEMA(model, spec.ema_decay)
        self.bad = BadSteps(spec.max_bad_steps)
        saved = restore_training(self) if resume else {}
        start = saved.get("step", 0)
        distributed.broadcast_module(trainable)  # equal already (same seed or checkpoint); made certain
        trainable.train()
        self.parameters = [p for p in trainable.parameters() if p.requires_grad]
        self.buffers = list(model.buffers())

        # ---- what a step is made of: the text rows, the batches and, for streamed data, the loader
        self.text = TextRows(model, captions, queries, self.autocast, device)
        self.probe = _rankme_probe(data, recipe, device) if spec.rankme_every else None
        in_memory = None if pairs or shards or data.streamed else data.images.to(device)
        self.batches = BatchMaker(recipe, None if shards else len(data), device, in_memory,
                                  None if shards else data.labels, captions, objective.views, queries, world,
                                  self.sampler)
        self.feed = DataFeed(data, recipe, self.batches, start, device, saved.get("stream_skipped", {}),
                             saved.get("stream_cursors"))

        # ---- logs: metrics.jsonl (and TensorBoard, MLflow), the progress bar, the profile
        self.logger = (MetricsLogger(run_dir, recipe.logging, flatten(recipe.model_dump(mode="json")),
                                     start_step=start) if world.main else None)
        self.window = _Window(start, len(mixture.names))
        self.progress = tqdm(range(start, spec.steps), initial=start, total=spec.steps, desc="pretrain",
                             unit="step", dynamic_ncols=True, disable=not world.main)
        self.profiler = StepProfiler(run_dir, spec.profile_steps, world.main)

    def __enter__(self) -> Training:
        self._open = contextlib.ExitStack()
        self._open.enter_context(tf32_matmuls(self.spec.tf32))
        if self.logger:
            self._open.enter_context(contextlib.closing(self.logger))
        self._open.enter_context(contextlib.closing(self.progress))
        self._open.enter_context(self.profiler)
        return self

    def __exit__(self, *exc) -> None:
        self._open.__exit__(*exc)

    def batch(self, step: int) -> Batch:
        """The step's batch, a pure function of the step number (and, streamed, of the images loaded for it)."""
        self.profiler.phase("data")
        loaded = self.feed.next()
        self.profiler.phase("batch")
        batch = self.batches(step, loaded)
        self.text.prepare(batch)
        if self.sampler is not None:
            self.window.sources += self.sampler.counts(step)
        return batch

    def set_lr(self, step: int) -> float:
        """The schedule's learning rate of `step`, set in each parameter group (scaled by its layer decay)."""
        spec = self.spec
        lr = lr_at(step, spec.lr, spec.steps, spec.warmup_steps, spec.schedule, spec.cooldown_fraction)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        return lr

    def step(self, step: int, batch: Batch, stop: StopSignals) -> None:
        """One optimizer step on the objective's loss, chunked if asked, with exact gradients; not applied (its
        batch-norm statistics restored) when the loss or the gradient norm is NaN or Inf."""
        self.profiler.phase("gradients")
        self.optimizer.zero_grad(set_to_none=True)
        kept = [buffer.clone() for buffer in self.buffers]  # batch-norm statistics, restored if the step is bad
        embeddings: list[torch.Tensor] = []  # the step's embeddings, detached, for the objective's state
        loss = self._agreed(step_gradients(self.model, self.objective, batch, self.text, self.spec, self.autocast,
                                           self.scaler, embeddings), stop)
        self.profiler.phase("optimizer")
        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        norm = distributed.gradient_norm([p.grad for p in self.parameters if p.grad is not None])
        # with fp16, overflowing gradients are the scaler's to skip (it then lowers the scale)
        applied = self.bad.judge(step, loss, None if self.scaler else norm)
        self._apply(applied, norm, embeddings, batch)
        self.window.add(loss, applied)
        with torch.no_grad():
            for buffer, before in zip(self.buffers, kept, strict=True):
                buffer.copy_(torch.where(applied, buffer, before))
        if self.scaler:
            self.scaler.update()

    def _agreed(self, loss: torch.Tensor, stop: StopSignals) -> torch.Tensor:
        """The global batch's loss (with local_loss each rank has its rows'); a signal to any rank reaches all."""
        if self.world.size == 1:
            return loss
        total, stopping = distributed.sum_scalars([loss, stop.received is not None])
        stop.received = stop.received or (signal.SIGTERM if stopping else None)
        return torch.tensor(total / self.world.size, device=self.device)

    def _apply(self, applied: torch.Tensor, norm: torch.Tensor, embeddings: list[torch.Tensor], batch: Batch) -> None:
        """If `applied` (a bool on the device): clip the gradients, step the optimizer, then what follows a step:
        the temperature's bound, the objective's state, the EMA. The default path (fused AdamW, no EMA, no
        objective state, no fp16) decides on the device; the others read `applied` once."""
        read = functools.cache(lambda: bool(applied))
        if self.spec.grad_clip is not None:
            distributed.clip_gradients(self.parameters, self.spec.grad_clip, norm)
        if self.scaler:
            if read():
                self.scaler.step(self.optimizer)
        else:
            step_if(self.optimizer, applied, read)
        with torch.no_grad():  # as in CLIP: the temperature may not fall below 1 / max_logit_scale
            self.model.logit_scale.clamp_(0, math.log(self.recipe.model.max_logit_scale))
        if self.objective.stateful and read():
            self.objective.after_step(embeddings, batch)
        if self.ema is not None and read():
            self.ema.update(self.model)

    def log(self, done: int, lr: float) -> None:
        """A line of metrics.jsonl (and the progress bar's loss) for the steps since the last line."""
        spec, window = self.spec, self.window
        seconds = time.perf_counter() - window.begin_time
        self.bad.read()
        steps, loss = (window.steps.item(), window.loss.item()) if window.steps is not None else (0, 0.0)
        values = {"epoch": self.batches.epoch_of(done - 1), "loss": loss / steps if steps else None, "lr": lr,
                  "logit_scale": self.model.logit_scale.exp().item(),
                  "samples_per_s": (done - window.begin_step) * spec.batch_size / seconds,
                  "skipped_steps": self.bad.total, **self.feed.window(seconds)}
        if self.sampler is not None:  # the share of each source in the rows drawn since the last log line
            shares = window.sources / window.sources.sum()
            values.update({f"mix/{name}": share for name, share in zip(self.mixture.names, shares.tolist(),
                                                                       strict=True)})
        if self.probe is not None and done % spec.rankme_every == 0:
            values["rankme"] = _probe_rankme(self.model, self.probe, self.autocast)
        if self.logger:
            self.logger.log(done, values)
        if steps:
            self.progress.set_postfix(loss=f"{values['loss']:.3f}", **({"data wait": f"{values['data_wait']:.0%}"}
                                                                       if self.feed.streamed else {}))
        self.window = _Window(done, len(self.mixture.names))

    def save(self, step: int) -> Path:
        """Write checkpoints/step_<step> (rank 0; the others help gather and wait) and return its path."""
        self.bad.read()
        return save_training(self, step)

    def final_model(self) -> DualEncoder:
        """The trained model for evaluation: uncompiled, with the EMA weights when EMA is on, whole on every rank."""
        model = self.model
        uncompile([tower for tower, _ in model.towers()])
        if self.ema is not None:
            self.ema.apply_to(model)
        if self.spec.fsdp and self.world.size > 1:  # evaluation embeds with the whole model on every rank
            whole = distributed.full_tensors(model.state_dict())
            model = DualEncoder(self.recipe.model).to(self.device)
            model.load_state_dict(whole)
        model.eval()
        return model


class _Window:
    """What a log line covers: the steps applied since the previous line and their summed loss (both on the
    device, None before the first), the step and time it began at, and a mixture's rows per source."""

    def __init__(self, begin_step: int, sources: int) -> None:
        self.loss = self.steps = None
        self.begin_step, self.begin_time = begin_step, time.perf_counter()
        self.sources = torch.zeros(sources, dtype=torch.long)

    def add(self, loss: torch.Tensor, applied: torch.Tensor) -> None:
        loss = torch.where(applied, loss.detach(), 0.0)
        self.loss = loss if self.loss is None else self.loss + loss
        self.steps = applied.long() if self.steps is None else self.steps + applied


def build_model(recipe: Recipe, device: torch.device, world: distributed.World,
                dtype: torch.dtype | None = None) -> DualEncoder:
    """The recipe's model on `device` (in `dtype`, float32 by default); under torchrun with BatchNorm over the
    global batch, and with its towers sharded when `train.fsdp` is on; its towers compiled with `train.compile`."""
    model = DualEncoder(recipe.model).to(device, dtype)
    channels_last_towers([tower for tower in (model.image_tower,) if tower is not None], device)
    if world.size > 1:
        distributed.global_batch_norm(model)
        if recipe.train.fsdp:
            distributed.shard_towers([tower for tower, _ in model.towers()])
    if recipe.train.compile:
        compile_towers([tower for tower, _ in model.towers()])
    return model


def step_gradients(model: DualEncoder, objective, batch, text, spec, autocast, scaler,
                   embeddings: list[torch.Tensor]) -> torch.Tensor:
    """Back-propagate one step's loss into the gradients (chunked if `spec.chunk_size`, exact either way) and
    average them over the ranks; this rank's loss (detached). The step's embeddings are left in `embeddings`."""
    loss = backward_step(objective.inputs(model, batch, text, autocast), _recording(objective, batch, model,
                         embeddings), model, spec.chunk_size, spec.large_batch,
                         scale=scaler.scale if scaler else lambda value: value)
    distributed.average_gradients([*model.parameters(), *objective.parameters()])
    return loss


def _rankme_probe(data, recipe: Recipe, device: torch.device) -> torch.Tensor:
    """The fixed images whose embeddings' RankMe is logged: a seeded sample of the train split."""
    if isinstance(data, TextPairData):
        raise UserError("train.rankme_every logs the RankMe of image embeddings, but this model has no image tower. "
                        "Set train.rankme_every to null.")
    if isinstance(data, ShardPool):
        raise UserError("train.rankme_every logs the RankMe of a fixed probe set of the train split, which reading "
                        "whole shards (train.sampling: shards) never holds. Set train.rankme_every to null, or use "
                        "train.sampling 'epochs'.")
    count = min(recipe.train.rankme_samples, len(data))
    chosen = torch.from_numpy(first_of(len(data), count, recipe.seed, "rankme-probe"))
    if data.streamed:
        return decode_all(data.images[chosen], recipe.model.image_size, recipe.model.channels).to(device)
    return data.images[chosen].to(device)


@torch.no_grad()
def _probe_rankme(model: DualEncoder, images: torch.Tensor, autocast) -> float:
    """RankMe (predict/transferability.py) of the probe images' embeddings under the current weights."""
    from transferlab.predict.transferability import rankme  # scipy: imported by the runs that log RankMe only

    model.eval()
    with autocast:
        embeddings = torch.cat([model.encode_image(model.preprocess(chunk)).float() for chunk in images.split(256)])
    model.train()
    return rankme(embeddings.cpu().numpy())


def _recording(objective, batch, model: DualEncoder, sink: list[torch.Tensor]):
    """The objective's loss function for this batch, keeping the last embeddings it saw in `sink`."""
    def loss_fn(parts: list[torch.Tensor], with_params: bool) -> torch.Tensor:
        sink[:] = [part.detach() for part in parts]
        return objective.loss(parts, batch, model, with_params)
    return loss_fn


def _precision(precision: str, device: torch.device):
    """The autocast context of the towers' forward passes, and a gradient scaler for fp16."""
    if precision == "fp32":
        return contextlib.nullcontext(), None
    if precision == "fp16" and device.type != "cuda":
        raise UserError("train.precision fp16 needs a CUDA GPU (its gradients need a scaler and CPU fp16 kernels "
                        "are slow). Use bf16 or fp32 on this device.")
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
    return torch.autocast(device.type, dtype=dtype), scaler


def _check_positives(data, captions, mode: str) -> None:
    """`positives: label` needs labels (the batches compute the ids: train/batches.py)."""
    labelled = data.labelled if isinstance(data, ShardPool) else getattr(data, "labels", None) is not None
    if captions is not None and mode == "label" and not labelled:
        raise UserError(f"train.positives is 'label' but dataset '{data.name}' has no labels. Use 'caption' "
                        f"(identical captions match), 'pair' or 'auto'.")
