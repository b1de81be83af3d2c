"""Shared fixtures: a seeded single-thread torch per test, and a tiny recipe that trains in seconds."""

import pytest
import torch

from transferlab.config import load_recipe

TINY = [
    "model.image.name=cnn-tiny",
    "model.text.name=text-transformer-tiny",
    "model.text.locked=false",
    "model.embed_dim=16",
    "train.steps=8",
    "train.batch_size=32",
    "train.warmup_steps=2",
    "train.log_every=2",
    "train.checkpoint_every=4",
    "eval.linear_probe.weight_decays=[0.001]",
]


@pytest.fixture(autouse=True)
def one_thread_seeded():
    """Every test starts from the same global RNG state, whichever tests ran before it, and on one
    intra-op thread: test tensors are small, and on a busy shared machine a second thread made small
    matrix products many times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny_overrides() -> list[str]:
    return list(TINY)


@pytest.fixture
def tiny_recipe():
    return load_recipe(None, TINY)
