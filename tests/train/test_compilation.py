"""`train.compile`: compiled towers train like eager ones; where compiling fails the run goes on uncompiled."""

from __future__ import annotations

import json

import pytest
import torch

from transferlab.config import load_recipe
from transferlab.errors import UserError
from transferlab.train import compilation
from transferlab.train.loop import pretrain


def losses(run) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_compiled_towers_follow_the_eager_loss_curve(tiny_overrides, tmp_path):
    fast = tiny_overrides + ["train.steps=4", "train.log_every=1", "model.text.locked=true"]
    eager = pretrain(load_recipe(None, fast), tmp_path / "eager")
    compiled = pretrain(load_recipe(None, fast + ["train.compile=true"]), tmp_path / "compiled")
    assert losses(tmp_path / "compiled") == pytest.approx(losses(tmp_path / "eager"), rel=1e-4)
    for tower, _ in compiled.towers():
        assert tower._compiled_call_impl is None  # back to eager for evaluation
    differences = torch.cat([(ours - theirs).abs().flatten() for ours, theirs in zip(
        compiled.parameters(), eager.parameters(), strict=True)])
    # float rounding differs; Adam turns it into ~1e-6 after 4 steps of at most 2e-3 each, except where a gradient
    # is so near zero that rounding flips the sign of Adam's step (a handful of the 131k weights): at most 2 x 2e-3
    # a step there
    assert (differences > 5e-4).float().mean() < 1e-4 and differences.max() <= 4 * 2 * 2e-3


def test_without_a_working_compiler_the_run_trains_uncompiled(tiny_overrides, tmp_path, monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise RuntimeError("no C++ compiler found")

    monkeypatch.setattr(torch, "compile", broken)
    assert compilation.compile_towers([torch.nn.Linear(2, 2)]) is False
    assert "torch.compile is unavailable here (RuntimeError: no C++ compiler found)" in capsys.readouterr().err
    pretrain(load_recipe(None, tiny_overrides + ["train.steps=2", "train.compile=true"]), tmp_path / "run")
    assert len(losses(tmp_path / "run")) == 1


def test_compile_is_refused_with_fsdp():
    with pytest.raises(UserError, match="fsdp does not work with compile"):
        load_recipe(None, ["train.fsdp=true", "train.compile=true"])
