"""Run built-in recipes at full size and compare their training loss and downstream metrics.

For each recipe, `transferlab run RECIPE` (plus the --set overrides given) in a fresh run directory;
prints one JSON line per recipe: the final logged training loss, the mean throughput, and acc1 of every
(task, dataset) in results.json. Used for: 8-bit against 32-bit AdamW on the default recipe, LOOK
against supervised cross-entropy, and the objectives and optimizers side by side.

    python benchmarks/recipes.py default adamw8bit
    python benchmarks/recipes.py look supervised-ce --set eval.tasks=[linear_probe,knn]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("recipes", nargs="+")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    for recipe in args.recipes:
        run_dir = Path(tempfile.mkdtemp()) / "run"
        sets = [a for o in args.overrides for a in ("--set", o)]
        subprocess.run([sys.executable, "-m", "transferlab.cli", "run", recipe, "--out", str(run_dir), *sets],
                       check=True, capture_output=True)
        metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        results = json.loads((run_dir / "eval" / "results.json").read_text())
        row = {"benchmark": "recipes", "recipe": recipe, "overrides": args.overrides,
               "final_loss": round(metrics[-1]["loss"], 4),
               "samples_per_s": round(sum(m["samples_per_s"] for m in metrics[1:]) / max(1, len(metrics) - 1), 1)}
        for task in results["tasks"]:
            if "acc1" in task["metrics"]:
                row[f"{task['task']}/{task['dataset']}"] = round(task["metrics"]["acc1"], 4)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
