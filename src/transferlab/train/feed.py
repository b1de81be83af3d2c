"""The training loop's view of streamed data: each step's decoded images, what was skipped, and whether the
run is waiting for data.

For an in-memory training set `next()` gives None (the batch maker indexes the stored tensor). For a
streamed one it starts the loader (data/loader.py) at the first step to run — a resumed run starts there
directly, nothing is replayed — and measures two things for metrics.jsonl and the progress bar:
`data_wait`, the share of the time since the last log line spent waiting for the loader (near 0: the
model is the bottleneck; near 1: the data is), and `loader_images_per_s`, what the workers can decode
(images over their summed decode time, times the number of workers).
"""

from __future__ import annotations

import time
from collections import Counter

import torch

from transferlab import distributed
from transferlab.config import Recipe
from transferlab.data.dataset import ImageTextData
from transferlab.data.loader import Loaded, StepImages, default_workers, stream_steps


class DataFeed:
    def __init__(self, data, recipe: Recipe, batches, start: int, device: torch.device,
                 skipped: dict[str, int] | None = None) -> None:
        spec = recipe.train
        self.skipped: Counter = Counter(skipped or {})
        self.workers = 0
        self._stream = None
        self._wait = self._decode = 0.0
        self._images = 0
        if isinstance(data, ImageTextData) and data.streamed:
            self.workers = default_workers() if spec.loader_workers is None else spec.loader_workers
            skip_bad = all(recipe.datasets[name].bad_samples == "skip" for name in spec.sources)
            dataset = StepImages(data.images, batches.order, batches.shard, recipe.model.image_size,
                                 recipe.model.channels, batches.crops, recipe.seed, skip_bad)
            self._stream = stream_steps(dataset, start, spec.steps, self.workers, spec.prefetch,
                                        pin_memory=device.type == "cuda")

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
