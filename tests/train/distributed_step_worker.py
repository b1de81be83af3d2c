"""One training step of the real training code, under torchrun or in one process (float64).

`gradients(case)` builds the case's recipe and model (seeded: identical in every process), makes global
batch STEP with `BatchMaker` (this rank's shard under torchrun), runs `train.loop.step_gradients` (the
objective's loss over the global batch, gradient caching / accumulation when the case chunks, gradients
averaged over ranks) and returns the global batch's loss, every gradient and BatchNorm's running
statistics, and how many parameters FSDP sharded. tests/train/test_distributed_training.py calls it
in-process (one process, plain BatchNorm: the reference) and under `torchrun --nproc_per_node 2` through
this file (rank 0 writes `<case>/loss`, `<case>/sharded` and `<case>/<parameter>`).

Usage: python -m torch.distributed.run --standalone --nproc_per_node 2 distributed_step_worker.py OUT.safetensors
"""

from __future__ import annotations

import contextlib
import sys

import torch
from safetensors.torch import save_file

from transferlab import distributed
from transferlab.config import load_recipe
from transferlab.data.captions import CaptionTable
from transferlab.data.readers.sources import load_splits
from transferlab.runtime import seed_everything
from transferlab.train.batches import BatchMaker
from transferlab.train.loop import build_model, step_gradients
from transferlab.train.objectives import build_objective
from transferlab.train.text_rows import TextRows

STEP = 3
TRANSFORMERS = ["model.image.name=vit-tiny", "model.text.name=text-transformer-tiny", "model.text.locked=false"]
BASE = ["model.embed_dim=16", "train.batch_size=16", "train.data=digits"]
CHUNKED = ["train.chunk_size=3"]  # 8 rows per rank: chunks of 3, 3, 2
CASES = {
    "clip": TRANSFORMERS,
    "clip_local": TRANSFORMERS + ["train.local_loss=true"],
    "clip_cache": TRANSFORMERS + CHUNKED,
    "clip_local_cache": TRANSFORMERS + CHUNKED + ["train.local_loss=true"],
    "clip_accumulate": TRANSFORMERS + CHUNKED + ["train.large_batch=accumulate"],
    "siglip": TRANSFORMERS + ["train.objective=siglip", "model.init_logit_bias=-10"],
    "siglip_local": TRANSFORMERS + ["train.objective=siglip", "model.init_logit_bias=-10", "train.local_loss=true"],
    "siglip_cache": TRANSFORMERS + CHUNKED + ["train.objective=siglip", "model.init_logit_bias=-10"],
    "siglip_local_cache": TRANSFORMERS + CHUNKED + ["train.objective=siglip", "model.init_logit_bias=-10",
                                                    "train.local_loss=true"],
    "clip_batchnorm": ["model.image.name=cnn-tiny", "model.text.name=text-transformer-tiny",
                       "model.text.locked=false"],
    "clip_fsdp": TRANSFORMERS + ["train.fsdp=true"],
    "clip_fsdp_cache": TRANSFORMERS + CHUNKED + ["train.fsdp=true"],
    "clip_fsdp_batchnorm": ["model.image.name=cnn-tiny", "model.text.name=text-transformer-tiny",
                            "model.text.locked=false", "train.fsdp=true"],
    "supcon": ["model.image.name=vit-tiny", "model.text=null", "train.objective=supcon", "eval.tasks=[linear_probe]"],
}


def gradients(case: str) -> tuple[float, dict[str, torch.Tensor], int]:
    recipe = load_recipe(None, BASE + CASES[case])
    spec, world = recipe.train, distributed.current()
    data = load_splits(spec.data, recipe.datasets[spec.data], recipe.model.image_size, recipe.model.channels)["train"]
    seed_everything(recipe.seed)
    model = build_model(recipe, torch.device("cpu"), world, dtype=torch.float64)
    objective = build_objective(spec, recipe.model.embed_dim, len(data.classnames)).double()
    captions = None if recipe.model.text is None else CaptionTable(data.captions)
    batches = BatchMaker(recipe, len(data), torch.device("cpu"), data.images, data.labels, captions, objective.views,
                         world=world)
    batch = batches(STEP)
    batch.views = [view.double() for view in batch.views]
    no_autocast = contextlib.nullcontext()
    text = TextRows(model, captions, None, no_autocast, torch.device("cpu"))
    text.prepare(batch)
    loss = step_gradients(model, objective, batch, text, spec, no_autocast, None, [])
    (total,) = distributed.sum_scalars([loss])
    named = {**dict(model.named_parameters()), **{f"objective.{k}": v for k, v in objective.named_parameters()}}
    grads = {name: p.grad.full_tensor() if distributed.sharding.sharded(p.grad) else p.grad
             for name, p in named.items() if p.grad is not None}
    statistics = {f"buffer:{name}": b for name, b in model.named_buffers() if "running" in name}  # BatchNorm's
    shards = sum(distributed.sharding.sharded(p) for p in model.parameters())  # FSDP: how many are sharded
    return total / world.size, {**grads, **statistics}, shards


def main(out: str) -> None:
    world = distributed.start()
    torch.set_num_threads(1)
    results = {"world_size": torch.tensor(world.size)}
    for case in CASES:
        loss, grads, shards = gradients(case)
        results.update({f"{case}/{name}": grad for name, grad in grads.items()})
        results[f"{case}/sharded"] = torch.tensor(shards)
        results[f"{case}/loss"] = torch.tensor(loss, dtype=torch.float64)
    if world.main:
        save_file(results, out)
    distributed.stop()


if __name__ == "__main__":
    main(sys.argv[1])
