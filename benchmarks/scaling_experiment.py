"""Scaling laws on this machine: a grid of tiny pretraining runs, fitted on the small ones, the largest predicted.

1. Runs `transferlab run` (the default recipe: cnn-small image tower at several widths, locked MiniLM text
   tower, mnist5k) for every width × training length of the grid; each run registers itself in
   OUT/runs.jsonl. Existing runs are kept, so the script can be re-run after an interruption.
2. `transferlab predict OUT/runs.jsonl` with the largest runs (by compute) held out, for the linear-probe
   and zero-shot accuracy on digits: the chained loss law + error law, and a saturating power law of the
   error in compute. Prints one JSON line per fit with the held-out runs' relative errors.
3. One longer run with every checkpoint kept and RankMe logged; every checkpoint evaluated (linear probe on
   digits) and ranked: the Spearman correlation between RankMe and the linear-probe accuracy.

    python benchmarks/scaling_experiment.py --out runs/scaling
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

CLI = [sys.executable, "-m", "transferlab"]
WIDTHS = [4, 8, 16, 32]
STEPS = [25, 50, 100]
TARGETS = ["linear_probe/digits/acc1", "zeroshot_classification/digits/acc1"]
HOLDOUT = 2  # the runs with the most compute


def sets(*overrides: str) -> list[str]:
    return [part for override in overrides for part in ("--set", override)]


def grid(out: Path) -> None:
    for width in WIDTHS:
        for steps in STEPS:
            run = out / f"w{width}-s{steps}"
            if (run / "eval" / "results.json").is_file():
                continue
            if run.exists():  # an interrupted run: start it again
                subprocess.run(["rm", "-rf", str(run)], check=True)
            subprocess.run([*CLI, "run", "--out", str(run), *sets(
                f"model.image.options.width={width}", f"train.steps={steps}",
                f"train.warmup_steps={steps // 5}", "train.checkpoint_every=1000")],
                check=True, capture_output=True)
            print(json.dumps({"run": run.name, "done": True}), file=sys.stderr)


def fits(out: Path) -> None:
    for target in TARGETS:
        for law in ("chain", "power"):
            destination = out / "predict" / f"{target.replace('/', '_')}-{law}"
            subprocess.run([*CLI, "predict", str(out / "runs.jsonl"), "--target", target, "--law", law,
                            "--holdout", str(HOLDOUT), "--out", str(destination)], check=True, capture_output=True)
            report = json.loads((destination / "predict.json").read_text())
            print(json.dumps({"benchmark": "scaling_experiment", "target": target, "law": law,
                              "runs_fitted": report["runs_fitted"], "held_out": report["held_out"]}))


def rankme_over_checkpoints(out: Path) -> None:
    run = out / "checkpoints-run"
    if not (run / "checkpoints" / "latest").is_file():
        subprocess.run([*CLI, "pretrain", "--out", str(run), *sets(
            "model.image.options.width=16", "train.steps=150", "train.checkpoint_every=10",
            "train.keep_checkpoints=null", "train.rankme_every=10")], check=True, capture_output=True)
    checkpoints = sorted((run / "checkpoints").glob("step_*"), key=lambda p: int(p.name[5:]))
    for checkpoint in checkpoints:
        if not (run / f"eval-{checkpoint.name}" / "results.json").is_file():
            subprocess.run([*CLI, "eval", str(checkpoint), "--suite", "default", *sets(
                "eval.datasets=[digits]", "eval.tasks=[linear_probe]")], check=True, capture_output=True)
    subprocess.run([*CLI, "rank", *map(str, checkpoints), "--data", "digits", "--out", str(out / "rank")],
                   check=True, capture_output=True)
    record = json.loads((out / "rank" / "rank.json").read_text())
    print(json.dumps({"benchmark": "rankme_vs_probe", "checkpoints": len(checkpoints),
                      "correlations": record["correlations"]}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("runs/scaling"))
    parser.add_argument("--skip", nargs="*", default=[], choices=["grid", "fits", "checkpoints"])
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if "grid" not in args.skip:
        grid(args.out)
    if "fits" not in args.skip:
        fits(args.out)
    if "checkpoints" not in args.skip:
        rankme_over_checkpoints(args.out)


if __name__ == "__main__":
    main()
