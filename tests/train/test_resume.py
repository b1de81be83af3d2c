"""Resuming an interrupted run gives exactly the weights of an uninterrupted one."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from transferlab.train import loop
from transferlab.train.checkpoint import latest_checkpoint
from transferlab.train.logging import read_metrics


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
    assert [m["step"] for m in read_metrics(tmp_path / "cut" / "metrics.jsonl")] == [2, 4, 6, 8]


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_from_the_cli(tiny_overrides, tmp_path):
    """A real process killed with SIGKILL after its first checkpoint, resumed by the CLI."""
    overrides = [o for o in tiny_overrides if not o.startswith(("train.steps", "train.checkpoint_every"))]
    overrides += ["train.steps=40", "train.checkpoint_every=5"]
    args = [a for o in overrides for a in ("--set", o)]
    cli = [sys.executable, "-m", "transferlab.cli", "pretrain"]
    subprocess.run(cli + ["--out", str(tmp_path / "whole"), *args], check=True, capture_output=True)

    cut = tmp_path / "cut"
    process = subprocess.Popen(cli + ["--out", str(cut), *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while latest_checkpoint(cut) is None and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    killed_at = latest_checkpoint(cut)
    assert killed_at is not None and killed_at.name != "step_40", "the run must be killed mid-way"
    subprocess.run(cli + ["--out", str(cut), "--resume"], check=True, capture_output=True)

    whole, resumed = final_weights(tmp_path / "whole"), final_weights(cut)
    for key in whole:
        assert torch.equal(whole[key], resumed[key]), key
