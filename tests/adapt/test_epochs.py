from __future__ import annotations

import math

import torch

from transferlab.adapt.epochs import ShuffledEpochs
from transferlab.optim import lr_at
from transferlab.runtime import derived_generator


def test_orders_batches_and_learning_rates():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.0)
    loop = ShuffledEpochs(10, batch_size=4, epochs=3, seed=7, purpose="test")
    assert (loop.per_epoch, loop.total) == (3, 9)
    seen, rates, rng = [], [], torch.get_rng_state()
    for epoch, batches in loop.run(optimizer, 0.5, warmup=2, desc="test", progress=False):
        for batch in batches:
            seen.append((epoch, batch))
            rates.append(optimizer.param_groups[0]["lr"])
    assert torch.equal(torch.get_rng_state(), rng)  # the global RNG is not drawn from
    assert loop.step == 9 and [len(b) for _, b in seen] == [4, 4, 2] * 3
    for epoch in range(3):  # each epoch is one permutation from (seed, purpose, epoch)
        order = torch.randperm(10, generator=derived_generator(7, "test", epoch))
        assert torch.equal(torch.cat([b for e, b in seen if e == epoch]), order)
    assert rates == [lr_at(step, 0.5, 9, 2, "cosine") for step in range(9)]
    assert math.isclose(rates[1], 0.5) and rates[0] < rates[1] > rates[-1]


def test_no_epochs_no_steps():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    loop = ShuffledEpochs(5, batch_size=8, epochs=0, seed=0, purpose="test")
    assert list(loop.run(optimizer, 0.1, warmup=0, desc="test")) == [] and loop.step == loop.total == 0
