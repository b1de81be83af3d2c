"""Which samples make the global batch of a training step: a pure function of (seed, step).

- `epochs` (the default): each pass over the training set visits every sample once, in an order drawn
  from (seed, epoch) — a keyed permutation read at the step's positions only (data/stream/permutation.py), so no
  process ever holds a whole pass's order; the last partial batch of a pass is dropped. The in-memory
  default, and what makes a number of steps mean a number of passes.
- `resampled`: each step draws its batch afresh from (seed, step) — distinct samples within a step, with
  replacement across steps — open_clip's `--dataset-resampled`, for pools where a pass is never finished.
- a mixture (data/mixture.py) draws each step's sources and then samples of each source.

Being a function of the step alone, the rows of any step are known without replaying the ones before it:
a resumed run, another number of processes, and each loader worker compute them independently.
"""

from __future__ import annotations

from typing import Protocol

import torch

from transferlab.data.stream.permutation import Permutation
from transferlab.runtime import derived_generator


class Draws(Protocol):
    """A mixture's draws (data/mixture.py's `MixtureSampler`): the rows of a step, source by source."""

    def draw(self, step: int) -> torch.Tensor: ...


class StepRows:
    """Called with a step, the positions in the training set of that step's global batch (int64 [batch_size]):
    `rows = StepRows(size, batch_size, seed)`, then `rows(step)`."""

    def __init__(self, size: int, batch_size: int, seed: int, sampling: str = "epochs",
                 mixture: Draws | None = None) -> None:
        self.size, self.batch_size, self.seed, self.sampling, self.mixture = size, batch_size, seed, sampling, mixture
        self.steps_per_epoch = size // batch_size

    def epoch_of(self, step: int) -> int:
        """The pass over the training set that `step` belongs to (samples seen / set size, rounded down)."""
        return step // self.steps_per_epoch

    def __call__(self, step: int) -> torch.Tensor:
        if self.mixture is not None:
            return self.mixture.draw(step)
        if self.sampling == "resampled":
            return self._resampled(step)
        epoch, position = divmod(step, self.steps_per_epoch)
        order = Permutation.derived(self.size, self.seed, "order", epoch)
        return torch.from_numpy(order.take(position * self.batch_size, (position + 1) * self.batch_size))

    def _resampled(self, step: int) -> torch.Tensor:
        """batch_size distinct samples: from a random permutation when the set is small, else drawn with
        replacement until that many distinct ones came (the set is then at least four batches large)."""
        generator = derived_generator(self.seed, "resample", step)
        if self.size < 4 * self.batch_size:
            return torch.randperm(self.size, generator=generator)[:self.batch_size]
        rows: dict[int, None] = {}
        while len(rows) < self.batch_size:
            rows.update(dict.fromkeys(torch.randint(self.size, (self.batch_size,), generator=generator).tolist()))
        return torch.tensor(list(rows)[:self.batch_size], dtype=torch.long)
