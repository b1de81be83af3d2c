"""`transferlab eval` under torchrun: two processes share the embedding pass and write the same results."""

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import TINY
from tests.torchrun import CLI, ENV, torchrun
from transferlab.config import load_recipe
from transferlab.train.loop import pretrain


@pytest.mark.slow
def test_two_process_evaluation_of_the_default_suite_equals_one_process(tmp_path):
    pretrain(load_recipe(None, TINY), tmp_path / "run")
    command = ["eval", str(tmp_path / "run"), "--suite", "default", "--out"]
    subprocess.run([sys.executable, *CLI, *command, str(tmp_path / "one")], env=ENV, check=True, capture_output=True)
    two = torchrun(*CLI, *command, str(tmp_path / "two"))

    one_tasks = json.loads((tmp_path / "one" / "results.json").read_text())["tasks"]
    two_tasks = json.loads((tmp_path / "two" / "results.json").read_text())["tasks"]
    assert len(one_tasks) == len(two_tasks) >= 12  # six tasks on each of the two datasets
    for a, b in zip(one_tasks, two_tasks, strict=True):
        assert (a["task"], a["dataset"], a["metrics"]) == (b["task"], b["dataset"], b["metrics"])
    # the features each process cached (rank 0 writes) are the same tensors, gathered from both ranks
    cached = sorted((tmp_path / "one" / "features").rglob("*.safetensors"))
    assert cached
    for path in cached:
        other = tmp_path / "two" / path.relative_to(tmp_path / "one")
        assert torch.equal(load_file(str(path))["embeddings"], load_file(str(other))["embeddings"]), path.name
    assert two.stdout.count(" · default") == 1 and two.stderr.count("results:") == 1  # rank 0 alone prints
