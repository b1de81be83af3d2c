"""The default recipe's pretraining throughput before and after the speed work, and with its options, in one run.

Each variant pretrains the built-in default recipe (`transferlab pretrain`, cnn-small + locked MiniLM, batch
256) for `--steps` steps; its throughput is the samples/s that metrics.jsonl logs, the first logging window (10
steps: warm-up, and for `compile` the compilation) left out. `before` runs the code of an earlier commit
(`--before`, default: the last commit before the speed work) from a temporary git worktree with this
environment's packages; the others run the working tree. Variants alternate, `--repeats` times; the median of
each is reported with its ratio to `before`.

    python benchmarks/default_throughput.py                 # ~10 minutes on 2 CPU cores
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from statistics import median

ROOT = Path(__file__).resolve().parent.parent
BEFORE = "fb41569"  # main before the issue-8 work (open_clip towers, fused AdamW, train.compile)
VARIANTS = {"before": [], "after": [], "after+compile": ["train.compile=true"], "after+bf16": ["train.precision=bf16"]}


def throughput(source: Path, overrides: list[str], steps: int, work: Path) -> float:
    out = Path(tempfile.mkdtemp(dir=work)) / "run"
    sets = [arg for item in [f"train.steps={steps}", "train.log_every=10", f"train.checkpoint_every={steps}",
                             *overrides] for arg in ("--set", item)]
    env = {**os.environ, "PYTHONPATH": str(source / "src")}
    subprocess.run([sys.executable, "-m", "transferlab.cli", "pretrain", "--out", str(out), *sets], check=True,
                   capture_output=True, env=env, cwd=work)
    rates = [json.loads(line)["samples_per_s"] for line in (out / "metrics.jsonl").read_text().splitlines()][1:]
    return sum(rates) / len(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", default=BEFORE, help="the commit measured as 'before'")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        old = work / "before"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(old), args.before], check=True,
                       capture_output=True)
        try:
            sources = {name: old if name == "before" else ROOT for name in VARIANTS}
            rates: dict[str, list[float]] = {name: [] for name in VARIANTS}
            for repeat in range(args.repeats):
                for name in list(VARIANTS)[::1 if repeat % 2 == 0 else -1]:
                    rates[name].append(throughput(sources[name], VARIANTS[name], args.steps, work))
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old)], check=False)
    base = median(rates["before"])
    for name, values in rates.items():
        print(json.dumps({"benchmark": "default_throughput", "variant": name, "before_commit": args.before,
                          "steps": args.steps, "repeats": args.repeats, "samples_per_s": round(median(values), 1),
                          "min": round(min(values), 1), "max": round(max(values), 1),
                          "vs_before": round(median(values) / base, 3)}), flush=True)


if __name__ == "__main__":
    main()
