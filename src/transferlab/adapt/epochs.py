"""The step loop fine-tuning and CoOp share: epochs of shuffled minibatches under a warmup + cosine learning
rate, with a progress bar over the steps.

Epoch e visits the `samples` rows in the order torch.randperm(samples, generator=derived_generator(seed,
purpose, e)), in minibatches of `batch_size` (the last one smaller); before each minibatch the optimizer's
learning rate is set to lr_at(step, lr, total, warmup, "cosine"): a linear warmup over `warmup` steps, then
cosine decay to 0 at total = epochs · ceil(samples / batch_size). Data order and learning rate are pure
functions of (seed, purpose, step), so a fit is reproducible and the global RNG is not touched.

    loop = ShuffledEpochs(len(x), batch_size=32, epochs=10, seed=0, purpose="finetune")
    for epoch, batches in loop.run(optimizer, lr, warmup=math.ceil(0.1 * loop.total), desc="finetune"):
        for batch in batches:   # CPU index tensors
            ...one optimizer step on x[batch]...
            loop.show(loss=f"{loss.item():.3f}")
    loop.step                   # steps taken
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from tqdm import tqdm

from transferlab.optim import lr_at
from transferlab.runtime import derived_generator


class ShuffledEpochs:
    def __init__(self, samples: int, batch_size: int, epochs: int, seed: int, purpose: str) -> None:
        self.samples, self.batch_size, self.epochs = samples, batch_size, epochs
        self.seed, self.purpose = seed, purpose  # epoch e's order: derived_generator(seed, purpose, e)
        self.per_epoch = math.ceil(samples / batch_size)
        self.total = epochs * self.per_epoch
        self.step = 0  # optimizer steps taken (batches the caller has finished)
        self._bar: tqdm | None = None

    def run(self, optimizer: torch.optim.Optimizer, lr: float, warmup: int, desc: str, progress: bool = True,
            **bar_options) -> Iterator[tuple[int, Iterator[torch.Tensor]]]:
        """(epoch, its minibatches of row indices) for each epoch. The learning rate is set before a minibatch
        is handed out and the step counted when the caller asks for the next one; `bar_options` go to tqdm."""
        with tqdm(total=self.total, desc=desc, unit="step", disable=not progress or self.total == 0,
                  **bar_options) as self._bar:
            for epoch in range(self.epochs):
                yield epoch, self._batches(epoch, optimizer, lr, warmup)

    def show(self, **postfix) -> None:
        """Values to show after the progress bar (tqdm's postfix)."""
        self._bar.set_postfix(**postfix)

    def _batches(self, epoch: int, optimizer: torch.optim.Optimizer, lr: float, warmup: int) -> Iterator[torch.Tensor]:
        order = torch.randperm(self.samples, generator=derived_generator(self.seed, self.purpose, epoch))
        for batch in order.split(self.batch_size):
            for group in optimizer.param_groups:
                group["lr"] = lr_at(self.step, lr, self.total, warmup, "cosine")
            yield batch
            self.step += 1
            self._bar.update()
