"""The gathers outside torch.distributed. Under torchrun (2 ranks) `all_gather_with_grad` is checked by
tests/losses/test_distributed.py, whose one launch runs the losses and the gather together."""

import torch

from transferlab.distributed import all_gather_no_grad, all_gather_with_grad, rank_and_size


def test_world_size_one_gathers_are_the_identity():
    x = torch.randn(3, 4, requires_grad=True)
    assert all_gather_with_grad(x) is x
    assert all_gather_no_grad(x) is x
    assert rank_and_size() == (0, 1)
