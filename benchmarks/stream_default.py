"""The default recipe trained from streamed data against the same data in memory: same metrics, and how much
of the in-memory speed streaming keeps.

mnist5k (the bundled 5,000 digits, 28 x 28 grey) is written as webdataset PNG shards (`load_bundled` +
`write_webdataset`, `--per-shard` samples a shard) with `.cls` labels, classnames.txt and, as captions, the
default recipe's templates filled in (the .json member; the reader takes it over `templates`), to a
temporary folder deleted at the end. Then `transferlab run` (no recipe: configs/default.yaml) with the
default's mnist5k dataset replaced, through `--set`, by a webdataset source over those shards (`label_key:
cls`, the default's templates and splits), once with `stream: true` (images decoded per step in the loader
workers, as many as the recipe's default) and once with `stream: false` (decoded into memory up front), for
each seed in `--seeds` (`--set seed=<s>`), the two alternating (which goes first alternates too).

Compared per seed: every number in eval/results.json but task timings (largest absolute difference; the
decoded pixels and each step's samples are the same, so they should be identical), and the steady-state
samples_per_s from metrics.jsonl (the mean over the log lines but the first, which holds the warm-up), with
its streamed / in-memory ratio; data_wait (share of time waiting for the loader) and loader_images_per_s of
the streamed runs are reported as logged. The load average is recorded before and after. One JSON line at
the end.

    python benchmarks/stream_default.py [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import mean, median

import yaml

ROOT = Path(__file__).resolve().parent.parent
TIMINGS = {"seconds", "created"}  # results.json entries that differ between any two runs


def write_shards(folder: Path, per_shard: int) -> str:
    from transferlab.data.readers.bundled import load_bundled
    from transferlab.data.readers.webdataset import write_webdataset

    templates = yaml.safe_load((ROOT / "configs" / "default.yaml").read_text())["datasets"]["mnist5k"]["templates"]
    data = load_bundled("mnist5k", "mnist5k", 28, 1, templates)  # the shards' captions: the default recipe's
    paths = write_webdataset(data, folder / "shard-%06d.tar", samples_per_shard=per_shard)
    return f"{folder}/shard-{{000000..{len(paths) - 1:06d}}}.tar"


def overrides(pattern: str, stream: bool, seed: int, extra: list[str]) -> list[str]:
    default = yaml.safe_load((ROOT / "configs" / "default.yaml").read_text())["datasets"]["mnist5k"]
    sets = ["datasets.mnist5k.source=webdataset", f"datasets.mnist5k.shards={pattern}",
            "datasets.mnist5k.label_key=cls", f"datasets.mnist5k.stream={'true' if stream else 'false'}",
            f"datasets.mnist5k.templates={json.dumps(default['templates'])}",
            f"datasets.mnist5k.splits={json.dumps(default['splits'])}", f"seed={seed}", *extra]
    return [arg for s in sets for arg in ("--set", s)]


def numbers(tree, prefix: str = "") -> dict[str, float]:
    """Every number in a results.json, by its path (but timings: `seconds`)."""
    if isinstance(tree, dict):
        return {k: v for key, value in tree.items() if key not in TIMINGS
                for k, v in numbers(value, f"{prefix}/{key}").items()}
    if isinstance(tree, list):
        return {k: v for i, value in enumerate(tree) for k, v in numbers(value, f"{prefix}[{i}]").items()}
    if isinstance(tree, (int, float)) and not isinstance(tree, bool):
        return {prefix: float(tree)}
    return {}


def run(work: Path, label: str, pattern: str, stream: bool, seed: int, extra: list[str]) -> dict:
    out = work / f"{label}-seed{seed}"
    command = [str(Path(sys.executable).parent / "transferlab"), "run", "--out", str(out),
               *overrides(pattern, stream, seed, extra)]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=work, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steady = [line for line in lines[1:] if "samples_per_s" in line]
    results = json.loads((out / "eval" / "results.json").read_text())
    return {"seconds": time.perf_counter() - started, "samples_per_s": mean(x["samples_per_s"] for x in steady),
            "data_wait": mean(x["data_wait"] for x in steady) if steady and "data_wait" in steady[0] else None,
            "loader_images_per_s": (mean(x["loader_images_per_s"] for x in steady)
                                    if steady and "loader_images_per_s" in steady[0] else None),
            "results": numbers(results), "final_loss": lines[-1].get("loss"), "command": command}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--per-shard", type=int, default=500, help="samples a shard (mnist5k: 5,000 in all)")
    parser.add_argument("--set", dest="extra", action="append", default=[],
                        help="a further recipe override for both (e.g. train.steps=30 for a quick look)")
    args = parser.parse_args()

    load_before = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="tl-bench-default-", dir="/tmp"))
    try:
        pattern = write_shards(work / "shards", args.per_shard)
        per_seed = []
        for i, seed in enumerate(args.seeds):
            order = (("streamed", True), ("memory", False))
            got = {label: run(work, label, pattern, stream, seed, args.extra)
                   for label, stream in (order if i % 2 == 0 else order[::-1])}
            a, b = got["streamed"]["results"], got["memory"]["results"]
            shared = sorted(set(a) & set(b))
            diffs = {key: abs(a[key] - b[key]) for key in shared}
            worst = max(diffs, key=diffs.get) if diffs else None
            row = {"seed": seed,
                   "streamed_samples_per_s": round(got["streamed"]["samples_per_s"], 1),
                   "memory_samples_per_s": round(got["memory"]["samples_per_s"], 1),
                   "ratio": round(got["streamed"]["samples_per_s"] / got["memory"]["samples_per_s"], 3),
                   "streamed_data_wait": got["streamed"]["data_wait"] and round(got["streamed"]["data_wait"], 4),
                   "loader_images_per_s": got["streamed"]["loader_images_per_s"]
                   and round(got["streamed"]["loader_images_per_s"], 1),
                   "metrics_compared": len(shared), "metrics_only_one_side": len(set(a) ^ set(b)),
                   "metrics_identical": sum(d == 0 for d in diffs.values()),
                   "max_metric_abs_diff": diffs[worst] if worst else None, "worst_metric": worst,
                   "final_loss": [got["streamed"]["final_loss"], got["memory"]["final_loss"]],
                   "zeroshot_acc1": {k: [a[k], b[k]] for k in shared if k.endswith("acc1") and "zeroshot" in k}}
            print(json.dumps(row), file=sys.stderr, flush=True)
            per_seed.append(row)
        print(json.dumps({"benchmark": "stream_default", "seeds": args.seeds, "extra_overrides": args.extra,
                          "ratio_median": median(r["ratio"] for r in per_seed),
                          "max_metric_abs_diff": max((r["max_metric_abs_diff"] or 0) for r in per_seed),
                          "all_metrics_identical": all(r["metrics_identical"] == r["metrics_compared"]
                                                       and not r["metrics_only_one_side"] for r in per_seed),
                          "per_seed": per_seed, "load_average_before": round(load_before, 2),
                          "load_average_after": round(os.getloadavg()[0], 2)}))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
