"""A step's rows (data/stream/order.py) depend on (seed, step) alone, never on the steps asked for before: a resumed
process, which starts mid-run, must get the rows of epochs >= 2 that a process walking from step 0 got."""

import numpy as np
import torch

from transferlab.data.stream.order import StepRows
from transferlab.data.stream.permutation import Permutation

SIZE, BATCH, SEED = 103, 8, 5  # 12 steps an epoch; the last 7 samples of each epoch's order are dropped


def test_rows_of_epoch_3_are_the_same_fresh_as_after_walking_epochs_0_to_2():
    walked = StepRows(SIZE, BATCH, SEED)
    per_epoch = walked.steps_per_epoch
    history = [walked(step) for step in range(4 * per_epoch)]
    for step in range(3 * per_epoch, 4 * per_epoch):
        assert torch.equal(StepRows(SIZE, BATCH, SEED)(step), history[step]), step
    backwards = StepRows(SIZE, BATCH, SEED)  # asked in reverse, epoch 3 first
    assert all(torch.equal(backwards(step), history[step]) for step in reversed(range(4 * per_epoch)))


def test_each_epoch_is_the_keyed_permutation_of_seed_and_epoch():
    """docs/design.md: the order of epoch e is the keyed permutation of (seed, "order", e); each epoch visits
    every kept sample once, and the epochs' orders differ."""
    rows = StepRows(SIZE, BATCH, SEED)
    per_epoch = rows.steps_per_epoch
    orders = []
    for epoch in range(4):
        order = torch.cat([rows(step) for step in range(epoch * per_epoch, (epoch + 1) * per_epoch)])
        expected = Permutation.derived(SIZE, SEED, "order", epoch)[np.arange(per_epoch * BATCH)]
        assert order.tolist() == expected.tolist() and len(set(order.tolist())) == per_epoch * BATCH
        orders.append(order)
    assert len({tuple(order.tolist()) for order in orders}) == 4
