"""A 2-process run killed mid-way resumes with 2 processes, or with 1, to the uninterrupted run's weights.

With 2 processes the resumed run repeats the uninterrupted one bit for bit. One process takes the same
steps on the same global batches, but sums in another order (one BatchNorm sum instead of two partial sums,
one gradient sum instead of an average of two): float32 rounding, which training amplifies step by step
(Adam's first steps move each weight by about ±lr whatever the size of its gradient). So the 1-process
resume is killed late, a few steps from the end, and compared within a tolerance."""

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import streamed_mnist5k
from tests.torchrun import CLI, ENV, TORCHRUN, torchrun
from transferlab.checkpoints import latest_checkpoint
from transferlab.fileio import read_jsonl_log

STEPS, LATE = 60, 50


def final_weights(run_dir):
    return load_file(str(latest_checkpoint(run_dir) / "model.safetensors"))


def died_after(run_dir, step, copy):
    """A copy of a finished run as it was when its checkpoint `step` was the newest."""
    shutil.copytree(run_dir, copy)
    for checkpoint in (copy / "checkpoints").glob("step_*"):
        if int(checkpoint.name.removeprefix("step_")) > step:
            shutil.rmtree(checkpoint)
    (copy / "checkpoints" / "latest").write_text(f"step_{step}\n")
    return copy


@pytest.mark.slow
@pytest.mark.parametrize("data", ["in memory", "streamed"])
def test_killed_two_process_run_resumes_with_two_or_one_process(tiny_overrides, tmp_path, data):
    overrides = [o for o in tiny_overrides if not o.startswith(("train.steps", "train.checkpoint_every"))]
    if data == "streamed":  # two ranks, each with its loader worker
        overrides += streamed_mnist5k(tmp_path / "pool")
    args = [a for o in overrides + [f"train.steps={STEPS}", "train.checkpoint_every=2", "train.keep_checkpoints=100"]
            for a in ("--set", o)]
    torchrun(*CLI, "pretrain", "--out", str(tmp_path / "whole"), *args)

    cut = tmp_path / "cut"
    process = subprocess.Popen([*TORCHRUN, "--nproc_per_node", "2", *CLI, "pretrain", "--out", str(cut), *args],
                               env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.time() + 300
    while (latest_checkpoint(cut) is None or latest_checkpoint(cut).name == "step_2") and time.time() < deadline:
        assert process.poll() is None, process.stderr.read().decode()[-3000:]
        time.sleep(0.01)
    os.killpg(process.pid, signal.SIGKILL)  # torchrun and both workers, mid-run
    process.wait()
    killed_at = int(latest_checkpoint(cut).name.removeprefix("step_"))
    assert 4 <= killed_at < STEPS, "the run was not killed mid-way; give it more steps"
    # 1 process resumes the uninterrupted 2-process run's checkpoint at step LATE (as if it had died there)
    late = died_after(tmp_path / "whole", LATE, tmp_path / "late")

    torchrun(*CLI, "pretrain", "--out", str(cut), "--resume")
    subprocess.run([sys.executable, *CLI, "pretrain", "--out", str(late), "--resume"], env=ENV,
                   check=True, capture_output=True)

    whole, two, one = (final_weights(tmp_path / name) for name in ("whole", "cut", "late"))
    assert whole.keys() == two.keys() == one.keys()
    for key in whole:
        assert torch.equal(whole[key], two[key]), key
        torch.testing.assert_close(one[key], whole[key], rtol=1e-5, atol=1e-5, msg=key)
    assert [m["step"] for m in read_jsonl_log(cut / "metrics.jsonl")] == list(range(2, STEPS + 1, 2))


@pytest.mark.slow
def test_fsdp_checkpoints_hold_whole_tensors_and_resume_sharded_or_not(tiny_overrides, tmp_path):
    overrides = [o for o in tiny_overrides if not o.startswith(("train.steps", "train.checkpoint_every"))]
    overrides += ["train.steps=12", "train.checkpoint_every=2", "train.keep_checkpoints=100"]
    args = [a for o in overrides for a in ("--set", o)]
    torchrun(*CLI, "pretrain", "--out", str(tmp_path / "plain"), *args)
    torchrun(*CLI, "pretrain", "--out", str(tmp_path / "fsdp"), *args, "--set", "train.fsdp=true")
    two = died_after(tmp_path / "fsdp", 6, tmp_path / "two")
    torchrun(*CLI, "pretrain", "--out", str(two), "--resume")
    one = died_after(tmp_path / "fsdp", 10, tmp_path / "one")
    subprocess.run([sys.executable, *CLI, "pretrain", "--out", str(one), "--resume"], env=ENV, check=True,
                   capture_output=True)

    plain, fsdp = final_weights(tmp_path / "plain"), final_weights(tmp_path / "fsdp")
    assert plain.keys() == fsdp.keys()  # whole tensors, the same names as without FSDP
    resumed_two, resumed_one = final_weights(two), final_weights(one)
    for key in fsdp:
        assert fsdp[key].shape == plain[key].shape, key
        assert torch.equal(resumed_two[key], fsdp[key]), key  # FSDP resumes its own run bit for bit
        # FSDP's reduce-scatter sums gradients in another order than the all-reduce: float32 rounding
        torch.testing.assert_close(fsdp[key], plain[key], rtol=1e-4, atol=1e-4, msg=key)
        torch.testing.assert_close(resumed_one[key], fsdp[key], rtol=1e-5, atol=1e-5, msg=key)
