"""--profile: the phases of a training step and the top operators, in profile.txt."""

import re

import pytest
from typer.testing import CliRunner

from transferlab.cli import app
from transferlab.train.profiling import PHASES


def test_profile_writes_where_a_step_spends_its_time(tiny_overrides, tmp_path):
    args = [a for o in tiny_overrides for a in ("--set", o)]
    result = CliRunner().invoke(app, ["pretrain", "--out", str(tmp_path / "run"), *args, "--profile"])
    assert result.exit_code == 0, result.output
    text = (tmp_path / "run" / "profile.txt").read_text()
    assert text.startswith("transferlab profile: 4 steps")  # 8 steps: 3 warm-up, 1 profiler warm-up, 4 recorded
    times = {name: float(ms) for name, ms in re.findall(r"^  (\S+)\s+([\d.]+) ms", text, re.MULTILINE)}
    assert set(PHASES) <= set(times)
    assert sum(times[name] for name in PHASES) == pytest.approx(times["step"], abs=0.02)
    assert times["gradients"] > times["log+checkpoint"]
    assert "aten::" in text  # the operator table

