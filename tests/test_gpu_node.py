"""benchmarks/gpu_node.py --tiny: the GPU node's one command runs every row at toy sizes on this CPU, within its
two-minute budget, so a slot on a GPU node is not lost to a broken row."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from gpu_node import ROWS  # noqa: E402


@pytest.mark.slow
def test_the_tiny_run_measures_every_row_within_its_budget(tmp_path):
    started = time.perf_counter()
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_node.py"), "--tiny"], capture_output=True,
                          text=True, timeout=600, env={**os.environ, "TMPDIR": str(tmp_path)})
    assert done.returncode == 0, done.stderr[-3000:]
    assert time.perf_counter() - started < 120  # the acceptance: under 2 minutes on 2 cores, start-up included
    lines = done.stdout.splitlines()
    rows = {row["row"]: row for row in (json.loads(line) for line in lines if line.startswith("{"))}
    assert list(rows) == list(ROWS)
    assert rows["compile"]["skipped"].startswith("torch.compile takes minutes on a CPU")  # measured on the GPU
    measured = {name: row for name, row in rows.items() if name != "compile"}
    assert not any("skipped" in row for row in measured.values()), measured  # none past the 2 minutes either
    for name in ("pretrain_synthetic", "pretrain_stream"):
        assert rows[name]["transferlab_samples_per_s"] > 0 and rows[name]["open_clip_samples_per_s"] > 0
        assert rows[name]["ratio"] > 0
    assert 0 <= rows["pretrain_stream"]["transferlab_data_wait"] <= 1
    assert all(rows["loader"][f"workers_{w}"]["ratio"] > 0 for w in (1, 2))
    assert rows["zeroshot"]["transferlab_images_per_s"] > 0
    if importlib.util.find_spec("clip_benchmark") is None:  # a gpu-bench extra, not a test one (104 MB)
        assert "clip_benchmark is not installed" in rows["zeroshot"]["peer_skipped"]
    else:
        assert rows["zeroshot"]["ratio"] > 0
    assert rows["adamw8bit"]["transferlab_ms"] > 0 and rows["adamw8bit"]["bitsandbytes_ms"] > 0
    assert all(f"| {name}" in done.stdout for name in ROWS)  # the table closes the run
    assert len(list(tmp_path.iterdir())) == 0  # the generated data is deleted
