"""Resuming an interrupted run gives exactly the weights of an uninterrupted one."""

import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import streamed_mnist5k
from transferlab.checkpoints import latest_checkpoint
from transferlab.config import load_recipe
from transferlab.fileio import read_jsonl_log
from transferlab.train import loop


class Preempted(Exception):
    pass


def final_weights(run_dir):
    return load_file(str(latest_checkpoint(run_dir) / "model.safetensors"))


def test_resume_after_a_crash_reproduces_the_uninterrupted_weights(tiny_recipe, tmp_path, monkeypatch):
    loop.pretrain(tiny_recipe, tmp_path / "whole")

    real_lr_at = loop.lr_at

    def crash_at_step_6(step, *args):
        if step == 6:
            raise Preempted
        return real_lr_at(step, *args)

    monkeypatch.setattr(loop, "lr_at", crash_at_step_6)
    with pytest.raises(Preempted):
        loop.pretrain(tiny_recipe, tmp_path / "cut")
    assert latest_checkpoint(tmp_path / "cut").name == "step_4"
    monkeypatch.setattr(loop, "lr_at", real_lr_at)
    loop.pretrain(tiny_recipe, tmp_path / "cut", resume=True)

    whole, cut = final_weights(tmp_path / "whole"), final_weights(tmp_path / "cut")
    assert whole.keys() == cut.keys()
    for key in whole:
        assert torch.equal(whole[key], cut[key]), key
    # the redone steps are logged once, in order
    assert [m["step"] for m in read_jsonl_log(tmp_path / "cut" / "metrics.jsonl")] == [2, 4, 6, 8]


# ~107 training digits: 3 steps of 32 an epoch, so 12 steps are epochs 0-3
FEW_DIGITS = ["datasets.few.source=digits", "datasets.few.splits={train: 0.06, val: 0.04, test: 0.9}",
              "train.data=few", "train.steps=12", "train.log_every=1"]


def test_a_resume_in_the_third_epoch_reproduces_the_uninterrupted_weights(tiny_overrides, tmp_path, monkeypatch):
    """The crash lands in epoch 3 and the run resumes from the checkpoint of step 8, in epoch 2: the order of the
    epochs the resumed process reads must not depend on the epochs it did not walk through."""
    recipe = load_recipe(None, [*tiny_overrides, *FEW_DIGITS])
    loop.pretrain(recipe, tmp_path / "whole")
    real_lr_at = loop.lr_at

    def crash_at_step_10(step, *args):
        if step == 10:
            raise Preempted
        return real_lr_at(step, *args)

    monkeypatch.setattr(loop, "lr_at", crash_at_step_10)
    with pytest.raises(Preempted):
        loop.pretrain(recipe, tmp_path / "cut")
    assert latest_checkpoint(tmp_path / "cut").name == "step_8"
    monkeypatch.setattr(loop, "lr_at", real_lr_at)
    loop.pretrain(recipe, tmp_path / "cut", resume=True)

    epochs = {line["step"]: line["epoch"] for line in read_jsonl_log(tmp_path / "cut" / "metrics.jsonl")}
    assert epochs[9] == 2 and epochs[12] == 3  # logged after steps 8 and 11 (numbered from 0)
    whole, cut = final_weights(tmp_path / "whole"), final_weights(tmp_path / "cut")
    assert whole.keys() == cut.keys()
    for key in whole:
        assert torch.equal(whole[key], cut[key]), key


KILLS, STEPS = 20, 160  # steps to spare: on a fast machine a process gets several steps done before its kill


@pytest.mark.slow
@pytest.mark.parametrize("data", ["in memory", "streamed"])
def test_twenty_sigkills_at_random_moments_then_resume_give_the_uninterrupted_weights(tiny_overrides, tmp_path, data):
    """A real process killed with SIGKILL 20 times, at random moments after it has made progress; every
    other kill lands while a checkpoint is being written. Each time `--resume` picks up, and the final weights
    equal those of a run never interrupted: with the data in memory, and streamed from shards by a loader worker
    (killed with its parent) with random resized crops."""
    overrides = [o for o in tiny_overrides if not o.startswith(("train.steps", "train.checkpoint_every"))]
    overrides += [f"train.steps={STEPS}", "train.checkpoint_every=1", "train.log_every=1"]
    if data == "streamed":
        overrides += streamed_mnist5k(tmp_path / "pool")
    args = [a for o in overrides for a in ("--set", o)]
    cli = [sys.executable, "-m", "transferlab.cli", "pretrain"]
    subprocess.run(cli + ["--out", str(tmp_path / "whole"), *args], check=True, capture_output=True)

    cut, moments, kills = tmp_path / "cut", random.Random(0), 0
    command = cli + ["--out", str(cut), *args]
    while kills < KILLS:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        command = cli + ["--out", str(cut), "--resume"]
        before = latest_checkpoint(cut)
        deadline = time.time() + 120
        while latest_checkpoint(cut) == before and process.poll() is None and time.time() < deadline:
            time.sleep(0.005)  # wait for progress: a new complete checkpoint
        if kills % 2:  # mid-write: as soon as the next checkpoint's temporary directory appears
            while not list((cut / "checkpoints").glob(".tmp-*")) and process.poll() is None:
                time.sleep(0.0005)
        else:
            time.sleep(moments.uniform(0, 0.15))
        if process.poll() is not None:
            assert process.returncode == 0, process.stderr.read().decode()
            pytest.fail(f"the run finished after {kills} kills; give it more steps")
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        kills += 1
    subprocess.run(command, check=True, capture_output=True)

    whole, resumed = final_weights(tmp_path / "whole"), final_weights(cut)
    for key in whole:
        assert torch.equal(whole[key], resumed[key]), key
    assert latest_checkpoint(cut).name == f"step_{STEPS}" and not list((cut / "checkpoints").glob(".tmp-*"))
    assert [m["step"] for m in read_jsonl_log(cut / "metrics.jsonl")] == list(range(1, STEPS + 1))
