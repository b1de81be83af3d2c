"""The samples of a training step: which images (or left texts), their augmented views and caption rows.

Everything random comes from generators derived from (seed, epoch) for the order (data/stream/order.py) and
(seed, step) for augmentation and caption choice, so a step is a pure function of its number. A streamed
training set's images arrive decoded from the loader workers (data/stream/loader.py) with the samples they are;
in-memory images are taken from the stored tensor; both then go through the same augmentation. Under
torchrun the global batch is the same for any number of processes and rank r takes its r-th contiguous
shard, with the random draws of the whole batch: the ranks' shards, concatenated, are the single-process
batch.

With a mixture of datasets (`train.data: {key: weight, ...}`) the samples of a step come from a
`MixtureSampler` (data/mixture.py) instead of the epoch's order, drawn from (seed, step) alike; the rest of
the step (augmentation, caption choice, sharding) is the same.
"""

from __future__ import annotations

import torch

from transferlab.config import Recipe
from transferlab.data.captions import CaptionTable, ColumnCaptionTable, StepCaptions
from transferlab.data.mixture import MixtureSampler
from transferlab.data.stream.crops import CropDraws
from transferlab.data.stream.loader import Loaded
from transferlab.data.stream.order import StepRows
from transferlab.data.transforms import augment, crop_batch, normalize, to_unit
from transferlab.distributed import World
from transferlab.errors import UserError
from transferlab.runtime import derived_generator, to_device
from transferlab.train.objectives import Batch


class BatchMaker:
    """`size` samples in the training set (None: read from whole shards, `train.sampling: shards`, where each step's
    rows, captions and labels arrive with its images); `images` for an image model held in memory (None: streamed,
    or a text-text model, which has `queries`, its left texts); `mixture` draws each step's samples when training
    on a mixture (None: `train.sampling`)."""

    def __init__(self, recipe: Recipe, size: int | None, device: torch.device, images: torch.Tensor | None,
                 labels: torch.Tensor | None, captions: CaptionTable | ColumnCaptionTable | StepCaptions | None,
                 views: int, queries: CaptionTable | None = None, world: World | None = None,
                 mixture: MixtureSampler | None = None) -> None:
        self.recipe, self.device, self.images, self.labels = recipe, device, images, labels
        self.captions, self.views, self.queries = captions, views, queries
        self.batch_size = recipe.train.batch_size
        self.order = None if size is None else StepRows(size, self.batch_size, recipe.seed, recipe.train.sampling,
                                                        mixture)
        self.epoch = 0  # of the latest step read from whole shards
        self.crops = CropDraws.for_spec(recipe.train.augment, recipe.seed)
        world = world or World()
        if self.batch_size % world.size:
            raise UserError(f"train.batch_size {self.batch_size} is the global batch and must divide evenly among "
                            f"the {world.size} processes. Use a multiple of {world.size}.")
        if world.size > 1 and captions is not None and recipe.train.captions == "all":
            raise UserError("train.captions 'all' gives each rank a different number of text rows, which the "
                            "distributed losses cannot gather; use captions 'sample' under torchrun.")
        shard = self.batch_size // world.size
        self.shard = slice(world.rank * shard, (world.rank + 1) * shard)  # this rank's rows of each batch

    def epoch_of(self, step: int) -> int:
        """The epoch of `step`; with a mixture, the passes over the combined set that many samples make; read from
        whole shards, the epoch this rank's latest reader was in."""
        return self.epoch if self.order is None else self.order.epoch_of(step)

    def __call__(self, step: int, loaded: Loaded | None = None) -> Batch:
        """The batch of `step`; for a streamed set, made of the images `loaded` for it."""
        if self.order is None:  # whole shards: the loaded rows are this rank's rows of the batch, with their texts
            everyone = torch.arange(self.batch_size)
            self._hold(loaded)
        else:
            everyone = self.order(step)
        if loaded is not None:  # the samples it used: replacements of unreadable ones included
            everyone = everyone.clone()
            everyone[self.shard] = loaded.index
        index, rows = everyone[self.shard], (self.shard.start, self.batch_size)
        generator = derived_generator(self.recipe.seed, "step", step)
        device, model = self.device, self.recipe.model
        views = []
        if loaded is not None or self.images is not None:
            if loaded is not None:
                raw = to_unit(to_device(loaded.images, device))  # the loader pinned them on CUDA
            else:
                raw = to_unit(self.images[to_device(index, device)])
                if self.crops is not None:  # the stored copy is cropped (the loader crops streamed images' originals)
                    raw = crop_batch(raw, [self.crops.crop(step, row) for row in range(rows[0], rows[0] + len(raw))])
            for _ in range(self.views):
                view = augment(raw, self.recipe.train.augment, generator, rows)
                # in place unless it would change `raw`, which a second view starts from
                views.append(normalize(view, model.mean, model.std, inplace=view is not raw or self.views == 1))
        labels = None if self.labels is None else to_device(self.labels[index], device)
        batch = Batch(views=views, index=to_device(index, device), labels=labels, positive_ids=None)
        if self.queries is not None:
            batch.query_ids = self.queries.sample(everyone, generator)[self.shard]
        if self.captions is not None:
            self._add_caption_rows(batch, everyone, generator)
        return batch

    def _add_caption_rows(self, batch: Batch, index: torch.Tensor, generator: torch.Generator) -> None:
        device = self.device
        if self.recipe.train.captions == "sample":  # `index` is the global batch: draws for all, our rows kept
            caption_ids = self.captions.sample(index, generator)[self.shard]
            index = index[self.shard]
            row_image = torch.arange(len(index))
            ids = self._positive_ids(index)
        else:  # every caption of every image is a row; an image's rows are all its positives (one process only)
            row_image, caption_ids = self.captions.all_rows(index)
            ids = row_image if self.labels is None or self.recipe.train.positives == "pair" \
                else self.labels[index][row_image]
        batch.caption_ids = caption_ids  # on the host: train/text_rows.py makes the text tower's inputs of them
        batch.row_image = to_device(row_image, device)
        batch.positive_ids = None if ids is None else to_device(ids, device)

    def _positive_ids(self, index: torch.Tensor) -> torch.Tensor | None:
        """Ids whose equality makes matches in the loss (None: only the pair): labels, or first captions' texts."""
        mode = self.recipe.train.positives
        if mode == "pair":
            return None
        if mode in ("label", "auto") and self.labels is not None:
            return self.labels[index]
        return self.captions.first_ids(index)

    def _hold(self, loaded: Loaded) -> None:
        """Take a step's rows read from whole shards: their captions and labels at their places in the batch."""
        if self.captions is not None:
            self.captions.hold(self.shard, self.batch_size, loaded.captions)
        if loaded.labels is not None:
            self.labels = torch.zeros(self.batch_size, dtype=torch.long)
            self.labels[self.shard] = loaded.labels
        self.epoch = loaded.cursor[1]["epoch"]
