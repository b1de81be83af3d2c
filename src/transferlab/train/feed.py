"""The training loop's view of streamed data: each step's decoded images, what was skipped, and whether the
run is waiting for data.

For an in-memory training set `next()` gives None (the batch maker indexes the stored tensor). For a
streamed one it starts the loader (data/stream/loader.py) at the first step to run — a resumed run starts there
directly, nothing is replayed; read from whole shards (data/stream/whole_shards.py), its readers start from the
cursors the checkpoint kept — and measures two things for metrics.jsonl and the progress bar:
`data_wait`, the share of the time since the last log line spent waiting for the loader (near 0: the
model is the bottleneck; near 1: the data is), and `loader_images_per_s`, what the workers can decode
(images over their summed decode time, times the number of workers).
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from dataclasses import asdict

import torch
from tqdm import tqdm

from transferlab import distributed
from transferlab.config import Recipe
from transferlab.data.dataset import ImageTextData
from transferlab.data.stream.loader import Loaded, StepImages, default_workers, stream_steps
from transferlab.data.stream.whole_shards import Cursor, ShardPool, ShardSteps, check_layout, stream_shard_steps


class DataFeed:
    def __init__(self, data, recipe: Recipe, batches, start: int, device: torch.device,
                 skipped: dict[str, int] | None = None, cursors: dict | None = None) -> None:
        spec = recipe.train
        self.skipped: Counter = Counter(skipped or {})
        self.workers = 0
        self._stream = None
        self._wait = self._decode = 0.0
        self._images = 0
        self.cursors: dict[int, dict] | None = None  # reading whole shards: each of this rank's readers' cursor
        streamed = isinstance(data, ShardPool) or (isinstance(data, ImageTextData) and data.streamed)
        if streamed:
            self.workers = default_workers() if spec.loader_workers is None else spec.loader_workers
        pin = device.type == "cuda"
        if isinstance(data, ShardPool):
            self._stream = self._whole_shards(data, recipe, batches, start, cursors, pin)
        elif streamed:
            skip_bad = all(recipe.datasets[name].bad_samples == "skip" for name in spec.sources)
            dataset = StepImages(data.images, batches.order, batches.shard, recipe.model.image_size,
                                 recipe.model.channels, batches.crops, recipe.seed, skip_bad)
            self._stream = stream_steps(dataset, start, spec.steps, self.workers, spec.prefetch, pin_memory=pin)

    def _whole_shards(self, pool: ShardPool, recipe: Recipe, batches, start: int, saved: dict | None, pin: bool):
        """The loader over whole shards, its readers resumed from the saved cursors (or, under another layout of
        ranks and workers, from the start of the epoch after the newest one begun)."""
        world, workers = distributed.current(), max(1, self.workers)
        check_layout(pool, world.size * workers)
        cursors = {int(slot): Cursor(**cursor) for slot, cursor in (saved or {}).get("cursors", {}).items()}
        if saved and saved.get("layout") != [world.size, workers]:
            epoch = max(cursor.epoch for cursor in cursors.values()) + 1
            if world.main:
                tqdm.write(f"data: the checkpoint's {saved['layout'][0]} processes x {saved['layout'][1]} loader "
                           f"workers read whole shards; this run has {world.size} x {workers}, so its readers start "
                           f"epoch {epoch} afresh (the rest of epoch {epoch - 1} is not seen)", file=sys.stderr)
            cursors = {slot: Cursor(epoch) for slot in range(world.size * workers)}
        mine = range(world.rank * workers, (world.rank + 1) * workers)
        self.cursors = {slot: asdict(cursors.get(slot, Cursor())) for slot in mine}
        self.layout = [world.size, workers]
        rows = batches.shard
        dataset = ShardSteps(pool, world.rank, world.size, self.workers, start, recipe.train.steps,
                             rows.stop - rows.start, recipe.model.image_size, recipe.model.channels, batches.crops,
                             recipe.seed, recipe.train.shuffle_buffer, rows.start, cursors)
        return stream_shard_steps(dataset, self.workers, recipe.train.prefetch, pin)

    @property
    def streamed(self) -> bool:
        return self._stream is not None

    def next(self) -> Loaded | None:
        """The next step's decoded images (None for in-memory data)."""
        if self._stream is None:
            return None
        begun = time.perf_counter()
        loaded = next(self._stream)
        self._wait += time.perf_counter() - begun
        self._decode += loaded.seconds
        self._images += len(loaded.images)
        self.skipped.update(loaded.skipped)
        if loaded.cursor is not None:
            slot, cursor = loaded.cursor
            self.cursors[slot] = cursor
        return loaded

    def window(self, seconds: float) -> dict[str, float]:
        """data_wait and loader_images_per_s since the last call (nothing for in-memory data)."""
        if self._stream is None:
            return {}
        values = {"data_wait": min(1.0, self._wait / seconds) if seconds > 0 else 0.0,
                  "loader_images_per_s": self._images / self._decode * max(1, self.workers) if self._decode else 0.0}
        self._wait = self._decode = 0.0
        self._images = 0
        return values

    def all_skipped(self) -> dict[str, int]:
        """The samples skipped while training, by reason, over every rank (a collective under torchrun)."""
        world = distributed.current()
        if world.size == 1:
            return dict(self.skipped)
        gathered = [None] * world.size
        torch.distributed.all_gather_object(gathered, dict(self.skipped))
        return dict(sum((Counter(part) for part in gathered), Counter()))

    def all_cursors(self) -> dict | None:
        """Reading whole shards: every rank's readers' cursors and the layout they read under (a collective
        under torchrun); None otherwise."""
        if self.cursors is None:
            return None
        world = distributed.current()
        parts = [self.cursors]
        if world.size > 1:
            parts = [None] * world.size
            torch.distributed.all_gather_object(parts, self.cursors)
        cursors = {str(slot): cursor for part in parts for slot, cursor in part.items()}
        return {"layout": self.layout, "cursors": cursors}
