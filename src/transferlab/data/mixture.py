"""Training on a mixture of datasets: their train splits as one set, and each step's draw of sources and samples.

`train.data: {mnist5k: 0.8, digits: 0.2}` trains on both datasets, drawing a batch row from `digits` with
probability 0.2; `train.late_data` gives other weights to the last `train.late_fraction` of the steps, the
domain upsampling that ends a run on the data it is meant for.

Combining (`combine`). The sources' train splits are concatenated in the order `train.data` names them, and
`sizes` records how many samples each source gave. Labels are kept apart: a source's labels are offset
by the classes of the sources before it and its class names are prefixed with its key (`digits/three`), so
`positives: auto` (= label) never makes a sample of one source a match of another's, even when their class
names agree — a "3" of one collection is not declared the same class as a "3" of another. Where that is the
intent, `positives: caption` says it through the captions: identical caption texts match whichever source
they come from (two digit sets captioned from the same templates). If any source has no labels the mixture
has none (`positives: auto` then matches identical captions), since labelled and unlabelled rows cannot be
compared. Text-pair sources combine the same way; the recipe refuses a mix of text pairs and images.

Sampling (`MixtureSampler`). Each row of a step's global batch draws its source from the step's weights,
then each source's rows take distinct samples of that source (a fresh random subset every step: with
replacement across steps, none within a step unless a source has fewer samples than rows drawn from it, as
a repeated image would be its own negative under `positives: pair`), the first elements of a keyed
permutation of the source (data/stream/permutation.py: no draw costs memory or time in the source's size). Every
draw comes from (seed, step), so a step is a pure function of its number: a resumed run
repeats it exactly, and the global batch is the same for any number of processes (BatchMaker shards it).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch

from transferlab.config import Recipe, TrainSpec, WebDatasetSource
from transferlab.data.caption_column import CaptionColumn
from transferlab.data.dataset import ImageTextData
from transferlab.data.lazy import LazyImages
from transferlab.data.readers.sources import load_splits
from transferlab.data.readers.text_pairs import TextPairData
from transferlab.data.report import DataReport
from transferlab.data.stream.permutation import first_of
from transferlab.data.stream.whole_shards import ShardPool, open_shard_pool
from transferlab.errors import UserError
from transferlab.runtime import derived_generator


@dataclass
class Mixture:
    """The combined training set: its sources' datasets `names`, of `sizes` samples each, one after the other
    (`sizes` is empty for a pool read whole shards at a time, whose size nobody knows)."""

    data: ImageTextData | TextPairData | ShardPool
    names: list[str]
    sizes: list[int]
    reports: dict[str, DataReport]

    @property
    def source_ids(self) -> torch.Tensor:
        """`names[source_ids[i]]` is the dataset sample i came from (built when asked: a pool's N int64s)."""
        return torch.repeat_interleave(torch.arange(len(self.names)), torch.tensor(self.sizes, dtype=torch.long))


def load_training_data(recipe: Recipe) -> Mixture:
    """The train split of `train.data` (of each of its datasets, combined), at the model's size and channels; with
    `train.sampling: shards`, the one pool read whole shards at a time (data/stream/whole_shards.py)."""
    size, channels = recipe.model.image_size, recipe.model.channels
    if recipe.train.sampling == "shards":
        (name,) = recipe.train.sources
        spec = recipe.datasets[name]
        if not isinstance(spec, WebDatasetSource):
            raise UserError(f"train.sampling 'shards' reads webdataset shards whole, but dataset '{name}' is a "
                            f"'{spec.source}' source. Use train.sampling 'epochs', or write it as shards.")
        pool = open_shard_pool(spec, name)
        return Mixture(pool, [name], [], {name: pool.report})
    return combine({name: load_splits(name, recipe.datasets[name], size, channels)["train"]
                    for name in recipe.train.sources})


def combine(parts: dict[str, ImageTextData | TextPairData]) -> Mixture:
    """One training set of `parts` (dataset key -> its train split); a single part is returned as it is."""
    names = list(parts)
    sizes = [len(part) for part in parts.values()]
    reports = {name: part.report for name, part in parts.items()}
    if len(parts) == 1:
        return Mixture(parts[names[0]], names, sizes, reports)
    for name, part in parts.items():
        if not len(part):
            raise UserError(f"train.data mixes dataset '{name}', whose train split is empty. Give it data or "
                            f"remove it from train.data (and train.late_data).")
    merged = DataReport(kept=sum(report.kept for report in reports.values()))
    for report in reports.values():
        merged.skipped.update(report.skipped)
    name = "+".join(names)
    if all(isinstance(part, TextPairData) for part in parts.values()):
        data = TextPairData(name, [text for part in parts.values() for text in part.left],
                            [text for part in parts.values() for text in part.right], merged)
        return Mixture(data, names, sizes, reports)
    labels = classnames = None
    if all(part.labels is not None and part.classnames is not None for part in parts.values()):
        offsets = [0, *itertools.accumulate(len(part.classnames) for part in parts.values())]
        labels = torch.cat([part.labels + offset for part, offset in zip(parts.values(), offsets, strict=False)])
        classnames = [f"{key}/{classname}" for key, part in parts.items() for classname in part.classnames]
    streamed = [key for key, part in parts.items() if part.streamed]
    if streamed and len(streamed) < len(parts):
        held = [key for key in parts if key not in streamed]
        raise UserError(f"train.data mixes streamed datasets ({', '.join(streamed)}) with datasets held in memory "
                        f"({', '.join(held)}); a mixture streams all its sources or none. Set `stream: true` (or "
                        f"false) on each of them alike.")
    images = LazyImages.cat([part.images for part in parts.values()]) if streamed else \
        torch.cat([part.images for part in parts.values()])
    data = ImageTextData(name=name, images=images,
                         captions=CaptionColumn.cat([part.captions for part in parts.values()]),
                         labels=labels, classnames=classnames, report=merged,
                         classnames_from=None if labels is None else "the mixed datasets' class names")
    return Mixture(data, names, sizes, reports)


def late_start(steps: int, fraction: float) -> int:
    """The first step of the late phase: the last ceil(fraction * steps) steps (at least one) are late.
    The product is rounded first so that 0.15 * 40 (6.000000000000001 in floating point) gives 6 steps."""
    return steps - max(1, math.ceil(round(fraction * steps, 9)))


class MixtureSampler:
    """The global batch of a step as positions in the combined set: sources drawn from the step's weights,
    then distinct samples of each source."""

    def __init__(self, sizes: list[int], weights: list[float], late_weights: list[float] | None, late_from: int,
                 batch_size: int, seed: int) -> None:
        self.sizes, self.batch_size, self.seed, self.late_from = sizes, batch_size, seed, late_from
        self.offsets = [sum(sizes[:i]) for i in range(len(sizes))]
        self.weights = torch.tensor(weights, dtype=torch.float64) / sum(weights)
        self.late_weights = None if late_weights is None else \
            torch.tensor(late_weights, dtype=torch.float64) / sum(late_weights)

    @classmethod
    def for_recipe(cls, spec: TrainSpec, seed: int, mixture: Mixture) -> MixtureSampler:
        late = None if spec.late_data is None else [spec.late_data.get(name, 0.0) for name in mixture.names]
        return cls(mixture.sizes, [spec.sources[name] for name in mixture.names], late,
                   late_start(spec.steps, spec.late_fraction), spec.batch_size, seed)

    def weights_at(self, step: int) -> torch.Tensor:
        """The normalised source weights of `step`."""
        return self.late_weights if self.late_weights is not None and step >= self.late_from else self.weights

    def sources(self, step: int) -> torch.Tensor:
        """The source of each row of the step's global batch."""
        generator = derived_generator(self.seed, "mixture", step)
        return torch.multinomial(self.weights_at(step), self.batch_size, replacement=True, generator=generator)

    def counts(self, step: int) -> torch.Tensor:
        """Rows of the step's global batch drawn from each source."""
        return torch.bincount(self.sources(step), minlength=len(self.sizes))

    def draw(self, step: int) -> torch.Tensor:
        """Positions in the combined set of the rows of the step's global batch."""
        sources = self.sources(step)
        index = torch.empty(self.batch_size, dtype=torch.long)
        for source, (offset, size) in enumerate(zip(self.offsets, self.sizes, strict=True)):
            rows = (sources == source).nonzero().squeeze(1)
            if len(rows):  # whole permutations, as many as the rows need: no repeat before every sample is used
                index[rows] = offset + torch.from_numpy(first_of(size, len(rows), self.seed, "mixture-rows", step,
                                                                 source))
        return index
