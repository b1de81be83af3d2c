"""Shared fixtures: a seeded single-thread torch per test, and a tiny recipe that trains in seconds."""

import os

import pytest
import torch
from hypothesis import settings

from transferlab.config import load_recipe

# CI (.ci/run sets TRANSFERLAB_CI=1) replays the same hypothesis examples on every run, so a red run can be
# reproduced; elsewhere hypothesis draws new examples each run and keeps exploring.
settings.register_profile("ci", derandomize=True)
if os.environ.get("TRANSFERLAB_CI"):
    settings.load_profile("ci")

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


def streamed_mnist5k(folder) -> list[str]:
    """Overrides that train on mnist5k written as webdataset shards into `folder`, streamed by a loader worker
    with random resized crops: the streaming variant of a recipe."""
    from transferlab.data.readers.bundled import load_bundled
    from transferlab.data.readers.webdataset import write_webdataset

    write_webdataset(load_bundled("mnist5k", "mnist5k", 28, 1, None), folder / "s-%d.tar")
    return ["datasets.mnist5k.source=webdataset", f"datasets.mnist5k.shards={folder}", "datasets.mnist5k.label_key=cls",
            "datasets.mnist5k.stream=true", "train.loader_workers=1", "train.augment.crop_scale=[0.6, 1.0]"]


@pytest.fixture(autouse=True, scope="session")
def private_cache(tmp_path_factory):
    """Shards downloaded for streaming go to a folder of the test session's, not the user's cache."""
    os.environ["TRANSFERLAB_CACHE"] = str(tmp_path_factory.mktemp("cache"))


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
