"""Streamed training batches: loader workers read and decode each step's images while the model trains.

The item of step s is this process's rows of step s's global batch (data/stream/order.py), each image read by
byte range and decoded at the model's resolution — its centre square, or a random resized crop of the
full-resolution image drawn from (seed, step, row) (data/stream/crops.py). Items are made by a torch DataLoader
over the steps, so `loader_workers` processes decode `prefetch` steps ahead each, and memory holds
workers × prefetch batches, never the pool. Workers send uint8 pixels (a quarter of float32's bytes);
the training process converts, augments and normalises them on its device, as for in-memory data.

A sample that cannot be read or decoded (a corrupt image, a shard changed since it was indexed, an
unreachable URL) is replaced by another drawn from (seed, step, row, attempt), so the batch stays a
function of the step whichever worker meets it, and is counted by reason; with `bad_samples: error` the
run stops naming the sample. Each item says which samples it used, for their captions and labels.
"""

from __future__ import annotations

import gc
import os
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset

from transferlab.data.images import BadImage
from transferlab.data.lazy import LazyImages
from transferlab.data.stream.crops import CropDraws
from transferlab.data.stream.order import StepRows
from transferlab.data.tar.remote import RangeReader
from transferlab.errors import UserError
from transferlab.runtime import derived_random

MAX_REPLACEMENTS = 32  # draws for a bad sample's stand-in before the pool is judged unusable
MAX_WORKERS = 8


def default_workers() -> int:
    """One loader worker per CPU core but one (the training process's), at least one, at most MAX_WORKERS."""
    return max(1, min(MAX_WORKERS, (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                                    else os.cpu_count() or 2) - 1))


@dataclass
class Loaded:
    """One step's decoded rows: uint8 images [b, C, S, S], the samples they are (after replacements), the
    samples skipped by reason, and the seconds the worker spent reading and decoding. Read from whole shards
    (data/stream/whole_shards.py), the rows bring their captions and labels, and the reading slot's cursor after
    them."""

    step: int
    images: torch.Tensor
    index: torch.Tensor
    skipped: dict[str, int]
    seconds: float
    error: str | None = None
    captions: list[list[str]] | None = None
    labels: torch.Tensor | None = None
    cursor: tuple[int, dict] | None = None

    def pin_memory(self) -> Loaded:  # DataLoader(pin_memory=True) calls this on the CUDA path
        self.images = self.images.pin_memory()
        return self


class StepImages(Dataset):
    """Item `step`: this process's rows (`rows` of the global batch) of that step, decoded."""

    def __init__(self, images: LazyImages, order: StepRows, rows: slice, size: int, channels: int,
                 crops: CropDraws | None, seed: int, skip_bad: bool) -> None:
        self.images, self.order, self.rows, self.size, self.channels = images, order, rows, size, channels
        self.crops, self.seed, self.skip_bad = crops, seed, skip_bad
        self.reader = RangeReader()

    def __len__(self) -> int:  # DataLoader asks; steps are named by the sampler
        return 2**62

    def __getitem__(self, step: int) -> Loaded:
        started = time.perf_counter()
        chosen = self.order(step)[self.rows].clone()
        out = torch.empty(len(chosen), self.channels, self.size, self.size, dtype=torch.uint8)
        skipped: Counter = Counter()
        for j, sample in enumerate(chosen.tolist()):
            row = self.rows.start + j
            crop = None if self.crops is None else self.crops.crop(step, row)
            for attempt in range(MAX_REPLACEMENTS + 1):
                try:
                    out[j] = self.images.decode(sample, self.size, self.channels, self.reader, crop)
                    break
                except BadImage as err:
                    skipped[err.reason] += 1
                    if not self.skip_bad:
                        return Loaded(step, out[:0], chosen[:0], dict(skipped), 0.0,
                                      f"{self.images.where(sample)}: the image cannot be used: {err}. Fix or remove "
                                      f"it, or set the dataset's `bad_samples: skip` to skip such samples (each is "
                                      f"replaced by another and counted in data_report.json).")
                    sample = self._stand_in(step, row, attempt)
            else:
                return Loaded(step, out[:0], chosen[:0], dict(skipped), 0.0,
                              f"{MAX_REPLACEMENTS + 1} samples drawn in a row could not be read or decoded "
                              f"({', '.join(f'{n} {reason}' for reason, n in skipped.most_common())}): too little "
                              f"of the pool is usable. Check the shards (data_report.json counts the skips).")
            chosen[j] = sample
        return Loaded(step, out, chosen, dict(skipped), time.perf_counter() - started)

    def _stand_in(self, step: int, row: int, attempt: int) -> int:
        return derived_random(self.seed, "replace", step, row, attempt).randrange(len(self.images))


def stream_steps(dataset: StepImages, start: int, stop: int, workers: int, prefetch: int,
                 pin_memory: bool) -> Iterator[Loaded]:
    """The Loaded items of steps start .. stop - 1, in order, decoded by `workers` processes (0: here).
    A worker's error (bad_samples: error, an unusable pool) is raised here as a UserError."""
    # its own generator: the base seed a DataLoader draws when it starts must not come from the global RNG, which a
    # resumed run restored and the model's dropout draws from (and nothing here is random: steps name their draws)
    loader = DataLoader(dataset, batch_size=None, sampler=range(start, stop), num_workers=workers,
                        prefetch_factor=prefetch if workers else None, pin_memory=pin_memory,
                        collate_fn=_keep, persistent_workers=False, generator=torch.Generator().manual_seed(0))
    if workers:  # the workers fork from here: they need none of this process's objects (the pool's captions),
        gc.freeze()  # and a frozen object is one their garbage collector never touches, so never copies
    try:
        batches = iter(loader)
    finally:
        if workers:
            gc.unfreeze()
    yield from checked(batches)


def checked(items: Iterable[Loaded]) -> Iterator[Loaded]:
    """The items in order; a worker's error (bad_samples: error, an unusable pool) raised here as a UserError."""
    for loaded in items:
        if loaded.error:
            raise UserError(loaded.error)
        yield loaded


def decode_all(images: LazyImages | torch.Tensor, size: int, channels: int, strict: bool = False,
               steps=None) -> torch.Tensor:
    """Every image of `images`, decoded here at its centre square (uint8 [N, C, size, size]) or by a model's own
    resize-and-crop `steps` (`decode_each`). An image that cannot be decoded is left out, or, when `strict`, a
    UserError naming it. A tensor is returned as it is."""
    if isinstance(images, torch.Tensor):
        return images
    decoded = []
    for i, image in enumerate(decode_each(images, size, channels, steps)):
        if not isinstance(image, BadImage):
            decoded.append(image)
        elif strict:
            raise UserError(f"{images.where(i)}: the image cannot be decoded ({image}). Fix or remove it from the "
                            f"dataset.")
    return torch.stack(decoded) if decoded else torch.empty(0, channels, size, size, dtype=torch.uint8)


def decode_each(images: LazyImages, size: int, channels: int, steps=None) -> list[torch.Tensor | BadImage]:
    """Each image of `images` decoded (or the BadImage saying why it cannot be), on as many threads as there
    would be loader workers (PIL decodes without holding the GIL)."""
    local = threading.local()

    def decode(i: int) -> torch.Tensor | BadImage:
        if not hasattr(local, "reader"):
            local.reader = RangeReader()
        try:
            return images.decode(i, size, channels, local.reader, steps=steps)
        except BadImage as err:
            return err
    with ThreadPoolExecutor(default_workers()) as pool:
        return list(pool.map(decode, range(len(images))))


def _keep(item: Loaded) -> Loaded:
    return item
