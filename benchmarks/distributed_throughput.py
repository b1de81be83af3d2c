"""Training throughput of `transferlab pretrain` (built-in default recipe) in 1 process vs 2 torchrun processes.

Configurations (global batch 256 in all of them; the same command, only the launcher and threads differ):

    1p x 2t            one process, OMP_NUM_THREADS=2
    1p x 1t            one process, OMP_NUM_THREADS=1
    2p x 1t            torchrun --standalone --nproc_per_node 2, OMP_NUM_THREADS=1 per process
    2p x 1t local_loss the same with --set train.local_loss=true

Each run goes into a fresh temporary directory; its throughput is the median `samples_per_s` of the logged
windows of metrics.jsonl after the first (the first window includes warm-up). The configurations are
interleaved (rotated order) and repeated, because the machine is shared and noisy; each repeat's runs are
divided by that repeat's 1p x 2t run and the median of these ratios is reported. Prints one JSON line per
configuration (after all repeats), with the raw per-run samples/s and the 1-minute load average before
each run (it includes the tail of the previous run; well above 2 means other jobs share the cores); progress
goes to stderr.

    python benchmarks/distributed_throughput.py --repeats 5 --steps 60
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from transferlab.config import load_recipe

CONFIGS = {
    "1p x 2t": {"processes": 1, "threads": 2, "local_loss": False},
    "1p x 1t": {"processes": 1, "threads": 1, "local_loss": False},
    "2p x 1t": {"processes": 2, "threads": 1, "local_loss": False},
    "2p x 1t local_loss": {"processes": 2, "threads": 1, "local_loss": True},
}
BASELINE = "1p x 2t"


def run_once(name: str, steps: int, log_every: int) -> float:
    """One pretraining run; the median samples/s of its logged windows after the first."""
    spec = CONFIGS[name]
    run_dir = Path(tempfile.mkdtemp(prefix="dist_throughput_")) / "run"
    if spec["processes"] == 1:
        launcher = [sys.executable, "-m", "transferlab"]
    else:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                    "--nproc_per_node", str(spec["processes"]), "-m", "transferlab"]
    overrides = [f"train.steps={steps}", f"train.log_every={log_every}", "train.checkpoint_every=100000"]
    if spec["local_loss"]:
        overrides.append("train.local_loss=true")
    command = launcher + ["pretrain", "--out", str(run_dir)]
    for override in overrides:
        command += ["--set", override]
    env = dict(os.environ, OMP_NUM_THREADS=str(spec["threads"]))
    subprocess.run(command, check=True, capture_output=True, env=env)
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    windows = [m["samples_per_s"] for m in metrics[1:]]
    if not windows:
        raise SystemExit(f"{name}: fewer than 2 logged windows; raise --steps or lower --log-every")
    return statistics.median(windows)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    args = parser.parse_args()
    names = [BASELINE] + [name for name in args.configs if name != BASELINE]
    throughput: dict[str, list[float]] = {name: [] for name in names}
    load: dict[str, list[float]] = {name: [] for name in names}  # 1-minute load average before each run
    for repeat in range(args.repeats):
        shift = repeat % len(names)
        for name in names[shift:] + names[:shift]:  # rotate the order: no configuration always runs first
            load[name].append(os.getloadavg()[0])
            throughput[name].append(run_once(name, args.steps, args.log_every))
            print(f"repeat {repeat}: {name}: {throughput[name][-1]:.1f} samples/s", file=sys.stderr, flush=True)
    baseline = throughput[BASELINE]
    global_batch = load_recipe(None, []).train.batch_size
    for name in names:
        ratios = [value / base for value, base in zip(throughput[name], baseline, strict=True)]
        row = {"benchmark": "distributed_throughput", "config": name, **CONFIGS[name],
               "global_batch": global_batch, "steps": args.steps, "repeats": args.repeats,
               "ratio_vs_1p2t": round(statistics.median(ratios), 3),
               "ratio_min": round(min(ratios), 3), "ratio_max": round(max(ratios), 3),
               "samples_per_s_runs": [round(value, 1) for value in throughput[name]],
               "load1_before_runs": [round(value, 2) for value in load[name]]}
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
