"""`train.sampling: shards`: training from whole shards read in sequence, with no index pass at all — for
object stores, servers that answer no range requests, and pools too large to index before the first step.

Each epoch e, a seeded permutation of the shards (data/stream/permutation.py, keyed by (seed, e)) is dealt to the
job's reading slots — one per (rank, loader worker), S = ranks × workers of them — slot g taking the shards
at positions g, g + S, g + 2S, ... Every shard of an epoch is read by exactly one slot, once, front to back
(one request for a URL: no range requests). A slot that finishes its share goes on to its share of the next
epoch, so no rank ever waits for data and uneven shards cost nothing but epochs that overlap a little.

Samples pass through a shuffle buffer of `train.shuffle_buffer` samples per slot, drawn from (seed, epoch,
shard) and emptied, shuffled, at the end of each shard: a shard's samples leave in an order that depends only
on the shard. Slot g serves the steps s with s % workers == g % workers of its rank: batch after batch of
its stream, so the batch of step s is a function of (seed, step) for a given number of ranks and workers.

Resuming is exact: each batch carries its slot's cursor (epoch, place in the epoch's share, samples of that
shard already given out), the checkpoint keeps every slot's latest, and a resumed slot reads its current
shard again from the start, replaying the buffer without decoding, up to where it was — at most one partial
shard per slot. A resume with another number of ranks or workers cannot continue the slots' streams: it
starts the epoch after the newest one any slot had begun, under the new layout (no sample of that epoch is
lost or repeated; the rest of the interrupted epoch is not seen), and says so.

A bad sample (an image that cannot be decoded, a sample the careful reader skips) is counted and replaced by
the stream's next sample; an unreachable shard is counted and passed over.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from transferlab.config import WebDatasetSource
from transferlab.data.images import BadImage, decode_image
from transferlab.data.report import BadSamples, DataReport
from transferlab.data.samples import INTEGER, fill_template
from transferlab.data.stream.crops import CropDraws
from transferlab.data.stream.loader import Loaded, checked
from transferlab.data.stream.permutation import Permutation
from transferlab.data.stream.shard_samples import iter_samples, parse_sample
from transferlab.data.stream.shard_scan import known_index
from transferlab.data.tar.count_files import published_counts
from transferlab.data.tar.dataset_files import read_classnames
from transferlab.data.tar.limits import IMAGE_EXTS
from transferlab.data.tar.paths import expand_sources
from transferlab.errors import UserError
from transferlab.runtime import derived_random

DEFAULT_BUFFER = 2000


@dataclass(frozen=True)
class Cursor:
    """Where a slot's stream stands: in `epoch`, at the `shard`-th shard of its share, `emitted` samples of it
    given out already."""

    epoch: int = 0
    shard: int = 0
    emitted: int = 0


@dataclass
class ShardPool:
    """A webdataset pool read whole shards at a time: its shards, the source settings, class names (from its
    classnames.txt) and templates, and the sample count its count files give (None: unknown)."""

    name: str
    spec: WebDatasetSource
    sources: list[str]
    classnames: list[str] | None
    classnames_from: str | None
    templates: list[str] | None
    report: DataReport
    published: int | None

    @property
    def labelled(self) -> bool:
        return self.spec.label_key is not None

    def share(self, epoch: int, slot: int, slots: int, seed: int) -> list[int]:
        """The shards (positions in `sources`) slot `slot` of `slots` reads in `epoch`."""
        order = Permutation.derived(len(self.sources), seed, "shard-order", epoch)
        return order[list(range(slot, len(self.sources), slots))].tolist()


class SlotStream:
    """The samples of one slot, in order, from a cursor on: (image bytes, captions, label index or None, where),
    the cursor after each."""

    def __init__(self, pool: ShardPool, slot: int, slots: int, seed: int, buffer: int, cursor: Cursor) -> None:
        self.pool, self.slot, self.slots, self.seed, self.buffer = pool, slot, slots, seed, buffer
        self.cursor = cursor
        self.skipped: Counter = Counter()

    def __iter__(self) -> Iterator[tuple]:
        epoch, place, skip = self.cursor.epoch, self.cursor.shard, self.cursor.emitted
        while True:
            share = self.pool.share(epoch, self.slot, self.slots, self.seed)
            for position in range(place, len(share)):
                emitted = 0
                for sample in self._shuffled(share[position], epoch):
                    emitted += 1
                    if emitted <= skip:
                        continue  # replayed up to where the resumed run was
                    self.cursor = Cursor(epoch, position, emitted)
                    yield sample
                skip = 0
                self.cursor = Cursor(epoch, position + 1, 0)
            epoch, place = epoch + 1, 0
            self.cursor = Cursor(epoch, 0, 0)

    def _shuffled(self, shard: int, epoch: int) -> Iterator[tuple]:
        draw = derived_random(self.seed, "shard-buffer", epoch, shard)
        held: list = []
        for sample in self._samples(shard):
            if len(held) < self.buffer:
                held.append(sample)
                continue
            at = draw.randrange(len(held))
            held[at], sample = sample, held[at]
            yield sample
        draw.shuffle(held)
        yield from held

    def _samples(self, shard: int) -> Iterator[tuple]:
        pool, spec = self.pool, self.pool.spec
        bad = BadSamples(pool.name, spec.bad_samples, DataReport(), "sample")
        text = {key for key in (spec.caption_key, spec.label_key) if key}
        wanted = {*text, "json"}
        lines: Counter = Counter()
        source = pool.sources[shard]
        for sample in iter_samples([source], bad, lambda ext: ext in wanted or ext.lower() in IMAGE_EXTS, text):
            parsed = parse_sample(sample, spec, pool.name, pool.labelled, bad, lambda member, _: member, lines)
            if parsed is None:
                continue
            label = None
            if pool.labelled:
                label = self._class_of(parsed.label, parsed.where, bad)
                if label is None:
                    continue
            captions = parsed.captions
            if not captions and pool.templates and label is not None and pool.classnames is not None:
                captions = [fill_template(template, pool.classnames[label], pool.name) for template in pool.templates]
            yield parsed.image, captions, label, parsed.where
        self.skipped.update(bad.report.skipped)

    def _class_of(self, label: str, where: str, bad: BadSamples) -> int | None:
        """A raw label's class: an index into the pool's class names (an integer or a name), or the integer
        itself when there are none; None (counted) for one that is neither."""
        known = self.pool.classnames
        if known is not None:
            number = known_index(label, tuple(known))
        else:
            number = int(label) if INTEGER.fullmatch(label) and int(label) >= 0 else -1
        if number >= 0:
            return number
        names = f"nor a class name in {self.pool.classnames_from}" if known is not None else \
            "and the pool has no classnames.txt (streaming whole shards cannot learn the class names first)"
        return bad("unknown label", where, f"the label '{label}' is not a class index {names}")


class ShardSteps(IterableDataset):
    """The Loaded items of steps start .. stop - 1 of one rank: worker w makes the steps s with
    s % workers == (start + w) % workers, from its slot's stream."""

    def __init__(self, pool: ShardPool, rank: int, ranks: int, workers: int, start: int, stop: int, rows: int,
                 size: int, channels: int, crops: CropDraws | None, seed: int, buffer: int, first_row: int,
                 cursors: dict[int, Cursor]) -> None:
        self.pool, self.rank, self.ranks, self.workers = pool, rank, ranks, max(1, workers)
        self.start, self.stop, self.rows, self.size, self.channels = start, stop, rows, size, channels
        self.crops, self.seed, self.buffer, self.first_row, self.cursors = crops, seed, buffer, first_row, cursors

    def slot_of(self, step: int) -> int:
        return self.rank * self.workers + step % self.workers

    def __iter__(self) -> Iterator[Loaded]:
        info = get_worker_info()  # workers: worker w makes every workers-th step from start + w; none: all steps
        first = self.start + (info.id if info is not None else 0)
        slot = self.slot_of(first)
        stream = SlotStream(self.pool, slot, self.ranks * self.workers, self.seed, self.buffer,
                            self.cursors.get(slot, Cursor()))
        samples = iter(stream)
        for step in range(first, self.stop, self.workers):
            try:
                yield self._batch(step, samples, stream, slot)
            except UserError as err:  # bad_samples: error; the training process raises it
                yield Loaded(step, torch.empty(0), torch.empty(0), {}, 0.0, error=str(err))
                return

    def _batch(self, step: int, samples: Iterator[tuple], stream: SlotStream, slot: int) -> Loaded:
        started = time.perf_counter()
        out = torch.empty(self.rows, self.channels, self.size, self.size, dtype=torch.uint8)
        captions, labels, skipped = [], [], Counter()
        j = 0
        while j < self.rows:
            data, texts, label, where = next(samples)
            crop = None if self.crops is None else self.crops.crop(step, self.first_row + j)
            try:
                out[j] = decode_image(data, self.size, self.channels, crop)
            except BadImage as err:
                if self.pool.spec.bad_samples == "error":
                    raise UserError(f"{where}: the image cannot be used: {err}. Fix or remove it, or set the "
                                    f"dataset's `bad_samples: skip` to skip such samples (each is replaced by the "
                                    f"stream's next one and counted in data_report.json).") from None
                skipped[err.reason] += 1
                continue
            captions.append(texts)
            labels.append(label)
            j += 1
        skipped.update(stream.skipped)
        stream.skipped.clear()
        return Loaded(step, out, torch.arange(self.rows), dict(skipped), time.perf_counter() - started,
                      captions=captions, labels=torch.tensor(labels) if self.pool.labelled else None,
                      cursor=(slot, asdict(stream.cursor)))


def stream_shard_steps(dataset: ShardSteps, workers: int, prefetch: int, pin_memory: bool) -> Iterator[Loaded]:
    """The Loaded items of the dataset's steps, in order, made by `workers` processes (0: here)."""
    loader = DataLoader(dataset, batch_size=None, num_workers=workers, prefetch_factor=prefetch if workers else None,
                        pin_memory=pin_memory, persistent_workers=False, generator=torch.Generator().manual_seed(0))
    yield from checked(loader)


def open_shard_pool(spec: WebDatasetSource, name: str) -> ShardPool:
    """The pool `spec.shards` names, for reading whole shards: nothing is read but its small dataset files."""
    if spec.splits.train < 1:
        raise UserError(f"train.sampling 'shards' trains on whole shards, so dataset '{name}' cannot hold out a val "
                        f"or test split (its splits are {spec.splits.train:g}/{spec.splits.val:g}/"
                        f"{spec.splits.test:g}). Set `datasets.{name}.splits: {{train: 1}}` and evaluate on other "
                        f"datasets, or use train.sampling 'epochs'.")
    sources = expand_sources(spec.shards)
    report = DataReport()
    classnames_from, classnames = read_classnames(sources[0], report) if spec.label_key else (None, None)
    counts = published_counts(sources)
    published = sum(counts.values()) if len(counts) == len(sources) else None
    report.kept = published or 0
    counted = "samples not counted" if published is None else f"{published} samples by its count files"
    report.note(f"dataset '{name}' is read whole shards at a time ({len(sources)} shards, {counted}); what reading "
                f"skips is counted under training_stream", warn=False)
    return ShardPool(name, spec, sources, classnames, None if classnames_from is None else str(classnames_from),
                     spec.templates, report, published)


def check_layout(pool: ShardPool, slots: int) -> None:
    """Every slot needs a shard in every epoch: refuse a pool with fewer shards than slots."""
    if len(pool.sources) < slots:
        raise UserError(f"train.sampling 'shards' deals whole shards to {slots} readers (ranks × loader workers), but "
                        f"dataset '{pool.name}' has {len(pool.sources)} shards ({pool.spec.shards}). Use fewer "
                        f"train.loader_workers or processes, split the pool into more shards, or use train.sampling "
                        f"'epochs'.")
