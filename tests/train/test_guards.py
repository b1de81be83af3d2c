"""A run is never lost: non-finite steps are skipped, signals stop it with a checkpoint, damaged checkpoints
are passed over, and only the newest few are kept."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from transferlab.checkpoints import latest_checkpoint
from transferlab.config import load_recipe
from transferlab.errors import Interrupted
from transferlab.fileio import read_jsonl_log
from transferlab.train import loop
from transferlab.train.guards import NonFiniteSteps


def weights(checkpoint):
    return load_file(str(checkpoint / "model.safetensors"))


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


class InfGradient(torch.autograd.Function):
    """Zero in the forward pass, an infinite gradient in the backward pass."""

    @staticmethod
    def forward(ctx, x):
        ctx.shape = x.shape
        return x.sum() * 0

    @staticmethod
    def backward(ctx, grad):
        return torch.full(ctx.shape, float("inf"))


def faulty_from(monkeypatch, bad_steps: set[int], kind: str):
    """Make the objective's loss NaN, or one gradient Inf, at the given (0-based) steps."""
    real_lr_at, real_encoders = loop.lr_at, loop.backward_step
    current = {}

    def lr_at(step, *args):
        current["step"] = step
        return real_lr_at(step, *args)

    def backward_step(encoders, loss_fn, model, *args, **kwargs):
        if current["step"] not in bad_steps:
            return real_encoders(encoders, loss_fn, model, *args, **kwargs)

        def faulty(parts, with_params):
            loss = loss_fn(parts, with_params)
            return loss * float("nan") if kind == "nan" else loss + InfGradient.apply(model.logit_scale)
        return real_encoders(encoders, faulty, model, *args, **kwargs)

    monkeypatch.setattr(loop, "lr_at", lr_at)
    monkeypatch.setattr(loop, "backward_step", backward_step)


@pytest.mark.parametrize("kind", ["nan", "inf-gradient"])
def test_non_finite_steps_are_skipped_counted_and_training_goes_on(tiny_recipe, tmp_path, monkeypatch, kind):
    faulty_from(monkeypatch, {2, 5}, kind)
    model = loop.pretrain(tiny_recipe, tmp_path)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    metrics = read_jsonl_log(tmp_path / "metrics.jsonl")
    assert [m["skipped_steps"] for m in metrics] == [0, 1, 2, 2]  # logged after steps 2, 4, 6, 8
    assert all(m["loss"] is not None and m["loss"] == m["loss"] for m in metrics)  # skipped losses not averaged in
    state = load_file(str(latest_checkpoint(tmp_path) / "train_state.safetensors"))
    steps = {v.item() for k, v in state.items() if k.endswith(".step")}
    assert steps == {6.0}  # 8 steps, 2 skipped: AdamW took 6


def test_too_many_bad_steps_in_a_row_stop_with_the_weights_from_before(tiny_overrides, tmp_path, monkeypatch):
    """The verdict stays on the device until the next log step (every 2 here): steps 5-7 are bad, the limit is
    reached after step 7, and step 8, finite, is not applied either; the run stops after it."""
    recipe = load_recipe(None, tiny_overrides + ["train.max_bad_steps=3", "train.checkpoint_every=4"])
    faulty_from(monkeypatch, {4, 5, 6}, "nan")
    with pytest.raises(NonFiniteSteps, match=r"Steps 5 to 7 .*step_8 holds the weights from before step 5.*"
                                             r"train\.lr.*--resume"):
        loop.pretrain(recipe, tmp_path)
    assert latest_checkpoint(tmp_path).name == "step_8"
    assert_same_weights(weights(tmp_path / "checkpoints" / "step_4"), weights(tmp_path / "checkpoints" / "step_8"))
    assert json.loads((tmp_path / "checkpoints" / "step_8" / "meta.json").read_text())["skipped_steps"] == 4


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_finishes_the_step_checkpoints_and_resume_matches_an_uninterrupted_run(tiny_recipe, tmp_path,
                                                                                         monkeypatch, signum):
    loop.pretrain(tiny_recipe, tmp_path / "whole")
    real_lr_at = loop.lr_at

    def signalled_in_step_5(step, *args):
        if step == 4:
            os.kill(os.getpid(), signum)  # arrives mid-step, as a scheduler's would
        return real_lr_at(step, *args)

    monkeypatch.setattr(loop, "lr_at", signalled_in_step_5)
    before = signal.getsignal(signum)
    with pytest.raises(Interrupted, match=f"Stopped by {signal.Signals(signum).name} after step 5"):
        loop.pretrain(tiny_recipe, tmp_path / "cut")
    assert latest_checkpoint(tmp_path / "cut").name == "step_5"  # between the every-4-steps checkpoints
    assert signal.getsignal(signum) is before  # the handlers are put back
    monkeypatch.setattr(loop, "lr_at", real_lr_at)
    loop.pretrain(tiny_recipe, tmp_path / "cut", resume=True)
    assert_same_weights(weights(latest_checkpoint(tmp_path / "whole")), weights(latest_checkpoint(tmp_path / "cut")))


@pytest.mark.parametrize("damage", ["flip", "truncate", "meta"])
def test_a_damaged_latest_checkpoint_is_reported_and_the_previous_one_used(tiny_recipe, tmp_path, capsys, damage):
    loop.pretrain(tiny_recipe, tmp_path / "whole")
    loop.pretrain(tiny_recipe, tmp_path / "cut")  # checkpoints at steps 4 and 8
    damaged = tmp_path / "cut" / "checkpoints" / "step_8"
    target = damaged / ("meta.json" if damage == "meta" else "train_state.safetensors")
    data = bytearray(target.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data[: len(data) // 2]) if damage != "flip" else bytes(data))
    loop.pretrain(tiny_recipe, tmp_path / "cut", resume=True)  # from step_4: steps 5 to 8 again
    err = capsys.readouterr().err
    assert "step_8" in err and "Trying the previous checkpoint" in err
    assert_same_weights(weights(latest_checkpoint(tmp_path / "whole")), weights(latest_checkpoint(tmp_path / "cut")))


def test_only_the_newest_checkpoints_are_kept(tiny_overrides, tmp_path):
    recipe = load_recipe(None, tiny_overrides + ["train.checkpoint_every=2", "train.keep_checkpoints=2"])
    loop.pretrain(recipe, tmp_path)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["latest", "step_6", "step_8"]


@pytest.mark.slow
def test_sigterm_to_the_cli_checkpoints_and_exits_with_143(tiny_overrides, tmp_path):
    overrides = [o for o in tiny_overrides if not o.startswith("train.steps")] + ["train.steps=2000"]
    process = subprocess.Popen([sys.executable, "-m", "transferlab.cli", "pretrain", "--out", str(tmp_path),
                                *[a for o in overrides for a in ("--set", o)]],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while latest_checkpoint(tmp_path) is None and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, output
    assert "stopped: Stopped by SIGTERM after step" in " ".join(output.split()) and "--resume" in output
    step = int(latest_checkpoint(tmp_path).name.removeprefix("step_"))
    assert 4 <= step < 2000 and json.loads((latest_checkpoint(tmp_path) / "meta.json").read_text())["step"] == step
