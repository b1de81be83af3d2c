"""The samples of a training step: which images (or left texts), their augmented views and caption rows.

Everything random comes from generators derived from (seed, epoch) for the order and (seed, step) for
augmentation and caption choice, so a step is a pure function of its number. Under torchrun the global
batch is the same for any number of processes and rank r takes its r-th contiguous shard, with the
random draws of the whole batch: the ranks' shards, concatenated, are the single-process batch.

With a mixture of datasets (`train.data: {key: weight, ...}`) the samples of a step come from a
`MixtureSampler` (data/mixture.py) instead of the epoch's order, drawn from (seed, step) alike; the rest of
the step (augmentation, caption choice, sharding) is the same.
"""

from __future__ import annotations

import torch

from transferlab.config import Recipe
from transferlab.data.captions import CaptionTable
from transferlab.data.mixture import MixtureSampler
from transferlab.data.transforms import augment, normalize, to_unit
from transferlab.distributed import World
from transferlab.errors import UserError
from transferlab.runtime import derived_generator
from transferlab.train.objectives import Batch


class BatchMaker:
    """`images` for an image model; `queries` (the left texts) instead for a text-text model; `mixture` draws
    each step's samples when training on a mixture (None: every epoch visits the samples in a new order)."""

    def __init__(self, recipe: Recipe, size: int, device: torch.device, images: torch.Tensor | None,
                 labels: torch.Tensor | None, captions: CaptionTable | None, positive_ids: torch.Tensor | None,
                 views: int, queries: CaptionTable | None = None, world: World | None = None,
                 mixture: MixtureSampler | None = None) -> None:
        self.recipe, self.size, self.device, self.images, self.labels = recipe, size, device, images, labels
        self.captions, self.positive_ids, self.views, self.queries = captions, positive_ids, views, queries
        self.mixture = mixture
        self.batch_size = recipe.train.batch_size
        world = world or World()
        if self.batch_size % world.size:
            raise UserError(f"train.batch_size {self.batch_size} is the global batch and must divide evenly among "
                            f"the {world.size} processes. Use a multiple of {world.size}.")
        if world.size > 1 and captions is not None and recipe.train.captions == "all":
            raise UserError("train.captions 'all' gives each rank a different number of text rows, which the "
                            "distributed losses cannot gather; use captions 'sample' under torchrun.")
        shard = self.batch_size // world.size
        self.shard = slice(world.rank * shard, (world.rank + 1) * shard)  # this rank's rows of each batch
        self.steps_per_epoch = size // self.batch_size  # the last partial batch of an epoch is dropped
        self._order, self._epoch = None, -1

    def epoch_of(self, step: int) -> int:
        """The epoch of `step`; with a mixture, the passes over the combined set that many samples make."""
        return step // self.steps_per_epoch

    def __call__(self, step: int) -> Batch:
        everyone = self._global_rows(step)
        index, rows = everyone[self.shard], (self.shard.start, self.batch_size)
        generator = derived_generator(self.recipe.seed, "step", step)
        device, model = self.device, self.recipe.model
        views = []
        if self.images is not None:
            raw = to_unit(self.images[index.to(device)])
            views = [normalize(augment(raw, self.recipe.train.augment, generator, rows), model.mean,
                               model.std) for _ in range(self.views)]
        labels = None if self.labels is None else self.labels[index].to(device)
        batch = Batch(views=views, index=index.to(device), labels=labels, positive_ids=None)
        if self.queries is not None:
            batch.query_ids = self.queries.sample(everyone, generator)[self.shard].to(device)
        if self.captions is not None:
            self._add_caption_rows(batch, everyone, generator)
        return batch

    def _global_rows(self, step: int) -> torch.Tensor:
        """The samples of the step's global batch."""
        if self.mixture is not None:
            return self.mixture.draw(step)
        epoch, position = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            generator = derived_generator(self.recipe.seed, "order", epoch)
            self._order = torch.randperm(self.size, generator=generator)
            self._epoch = epoch
        return self._order[position * self.batch_size:(position + 1) * self.batch_size]

    def _add_caption_rows(self, batch: Batch, index: torch.Tensor, generator: torch.Generator) -> None:
        device = batch.index.device
        if self.recipe.train.captions == "sample":  # `index` is the global batch: draws for all, our rows kept
            caption_ids = self.captions.sample(index, generator)[self.shard]
            index = index[self.shard]
            row_image = torch.arange(len(index))
            ids = None if self.positive_ids is None else self.positive_ids[index]
        else:  # every caption of every image is a row; an image's rows are all its positives (one process only)
            counts = self.captions.counts[index]
            row_image = torch.repeat_interleave(torch.arange(len(index)), counts)
            starts = torch.cumsum(counts, 0) - counts
            slot = torch.arange(len(row_image)) - starts[row_image]
            caption_ids = self.captions.table[index[row_image], slot]
            ids = row_image if self.labels is None or self.recipe.train.positives == "pair" \
                else self.labels[index][row_image]
        batch.caption_ids = caption_ids.to(device)
        batch.row_image = row_image.to(device)
        batch.positive_ids = None if ids is None else ids.to(device)
