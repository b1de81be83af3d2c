"""The main job, `transferlab run` on the built-in default recipe, over several seeds.

Prints one JSON line per seed: the four headline metrics of results.json, the whole command's wall time
and the training throughput logged in metrics.jsonl (samples/s after the first logging window).

    python benchmarks/default_run.py --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    for seed in args.seeds:
        run_dir = Path(tempfile.mkdtemp()) / "run"
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "transferlab.cli", "run", "--out", str(run_dir), "--set",
                        f"seed={seed}"], check=True, capture_output=True)
        seconds = time.perf_counter() - start
        results = json.loads((run_dir / "eval" / "results.json").read_text())
        metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        throughput = [m["samples_per_s"] for m in metrics[1:]]
        row = {"benchmark": "default_run", "seed": seed, "wall_s": round(seconds, 1),
               "train_samples_per_s": round(sum(throughput) / len(throughput), 1)}
        for task in results["tasks"]:
            row[f"{task['task']}/{task['dataset']}/acc1"] = round(task["metrics"]["acc1"], 4)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
