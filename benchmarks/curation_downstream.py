"""Curated vs random subset (issue 10): does MetaCLIP balancing of an unbalanced pool help downstream?

The pool is the default recipe's mnist5k train split (3,500 digits, 350 per class; the test split is never
touched), made long-tailed: the classes are put in a seeded random order and the class at rank k keeps a
seeded random share of its digits that falls geometrically from all of them (rank 0) to 1/`--ratio` of
them (rank 9). Each digit keeps the default recipe's five template captions ("a handwritten digit seven.",
...), and is written with `write_webdataset` (.png, .txt = first caption, .json = all captions, .cls =
label). Per seed s:

- curated: `transferlab curate POOL --metadata <the ten digit names> --cap T --seed s`, MetaCLIP balancing
  with the digit names as entries, so a class keeps about min(its count, T) digits;
- random: a seeded uniform sample of the pool with exactly the curated subset's size, so it keeps the
  pool's imbalance, written as shards too.

Each subset pretrains the default recipe (`transferlab run`, only the training data changed: a webdataset
source with `label_key: cls` and all of it in the train split) with seed s, curated and random runs
alternating, and is evaluated by the recipe's own suite: zero-shot and linear probe on the balanced mnist5k
test split and on digits. One JSON line per (subset, seed): size, class counts (pool order, head first),
zero-shot acc1 and class-mean recall, linear probe acc1, the wall time, and the zero-shot recall of the
three tail classes (the pool's smallest), recomputed from the run's cached test embeddings (results.json
keeps only aggregates; the recomputed acc1 is checked against it). Then one summary line: the mean over
seeds of each subset and of curated minus random. Everything is written to a temporary folder, deleted at
the end.

    python benchmarks/curation_downstream.py [--seeds 0 1 2 --ratio 15 --cap 50]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from transferlab.config import load_recipe
from transferlab.data.dataset import ImageTextData
from transferlab.data.readers.bundled import DIGIT_NAMES
from transferlab.data.readers.sources import load_splits
from transferlab.data.readers.webdataset import write_webdataset
from transferlab.data.stream.shard_samples import iter_samples
from transferlab.data.tar.dataset_files import CLASSNAMES
from transferlab.data.tar.paths import expand_shards

TAIL = 3  # classes reported one by one: the pool's smallest
EVAL_DATASETS = ("mnist5k", "digits")


def long_tailed_pool(ratio: float, seed: int) -> tuple[ImageTextData, list[int]]:
    """The default recipe's mnist5k train split with class at rank k keeping a ratio^(-k/9) share; the
    pool and its classes from head to tail."""
    recipe = load_recipe()
    train = load_splits("mnist5k", recipe.datasets["mnist5k"], recipe.model.image_size, recipe.model.channels)["train"]
    rng = np.random.default_rng(seed)
    order = [int(c) for c in rng.permutation(len(DIGIT_NAMES))]
    keep = []
    for rank, label in enumerate(order):
        members = np.flatnonzero(train.labels.numpy() == label)
        count = round(len(members) * ratio ** (-rank / (len(order) - 1)))
        keep.extend(rng.choice(members, count, replace=False).tolist())
    return train.subset(torch.as_tensor(sorted(keep))), order


def call(*args: str) -> None:
    """Run a transferlab command; on failure, stop with its output."""
    done = subprocess.run([sys.executable, "-m", "transferlab.cli", *args], capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"transferlab {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")


def curated_subset(pool_dir: Path, out: Path, entries: Path, cap: int, seed: int) -> int:
    """Curate the pool into `out` (MetaCLIP balancing only) and return the number of pairs kept."""
    call("curate", str(pool_dir), "--out", str(out), "--metadata", str(entries), "--cap", str(cap),
         "--seed", str(seed), "--workers", "1")
    shutil.copy(pool_dir / CLASSNAMES, out / CLASSNAMES)  # curate copies shards only; .cls indexes these names
    return json.loads((out / "curation.json").read_text())["kept"]


def class_counts(shards: Path, order: list[int]) -> dict[str, int]:
    labels = [int(s["cls"]) for s in iter_samples(expand_shards(str(shards)), keep=lambda ext: ext == "cls",
                                                  text={"cls"})]
    counts = np.bincount(labels, minlength=len(DIGIT_NAMES))
    return {DIGIT_NAMES[c]: int(counts[c]) for c in order}


def pretrain_and_evaluate(shards: Path, run_dir: Path, seed: int) -> tuple[dict, float]:
    """The default recipe on the shards; results.json and the wall time."""
    start = time.perf_counter()
    call("run", "--out", str(run_dir), "--set", f"seed={seed}", "--set", "datasets.subset.source=webdataset",
         "--set", f"datasets.subset.shards={shards}", "--set", "datasets.subset.label_key=cls",
         "--set", "datasets.subset.splits={train: 1.0, val: 0.0, test: 0.0}", "--set", "train.data=subset")
    return json.loads((run_dir / "eval" / "results.json").read_text()), time.perf_counter() - start


def zeroshot_recalls(run_dir: Path, results: dict) -> dict[str, np.ndarray]:
    """Per evaluation dataset, the zero-shot recall of each class (index = label), from the run's cached
    test embeddings; the acc1 they give must be the one in results.json."""
    from transferlab.evaluate.suite import embedded_dataset, suite_of
    from transferlab.evaluate.tasks import zeroshot_classification
    from transferlab.models.references import load_model

    item = load_model(str(run_dir), torch.device("cpu"))
    suite = suite_of(item.recipe)
    recalls = {}
    for name in EVAL_DATASETS:
        embedded = embedded_dataset(item.encoder, suite, name, run_dir / "eval" / "features")
        metrics, predicted = zeroshot_classification(embedded, suite.eval)
        logged = next(t["metrics"]["acc1"] for t in results["tasks"]
                      if t["task"] == "zeroshot_classification" and t["dataset"] == name)
        assert abs(metrics["acc1"] - logged) < 1e-9, f"{name}: recomputed zero-shot acc1 {metrics['acc1']} != {logged}"
        labels = embedded.data.labels
        recalls[name] = np.array([(predicted[labels == c] == c).double().mean().item()
                                  for c in range(len(DIGIT_NAMES))])
    return recalls


def row(subset: str, seed: int, counts: dict[str, int], results: dict, recalls: dict[str, np.ndarray],
        tail: list[int], seconds: float) -> dict:
    out = {"benchmark": "curation_downstream", "subset": subset, "seed": seed, "size": sum(counts.values()),
           "class_counts": counts}
    metrics = {(t["task"], t["dataset"]): t["metrics"] for t in results["tasks"]}
    for name in EVAL_DATASETS:
        zeroshot = metrics["zeroshot_classification", name]
        out[f"zeroshot/{name}/acc1"] = round(zeroshot["acc1"], 4)
        out[f"zeroshot/{name}/class_mean_recall"] = round(zeroshot["mean_per_class_recall"], 4)
        out[f"zeroshot/{name}/tail_recall"] = {DIGIT_NAMES[c]: round(float(recalls[name][c]), 4) for c in tail}
        out[f"zeroshot/{name}/tail_mean_recall"] = round(float(recalls[name][tail].mean()), 4)
        out[f"linear_probe/{name}/acc1"] = round(metrics["linear_probe", name]["acc1"], 4)
    out["wall_s"] = round(seconds, 1)
    return out


def summary(rows: list[dict]) -> dict:
    keys = ["size"] + [k for k in rows[0] if k.startswith(("zeroshot/", "linear_probe/"))
                       and not k.endswith("/tail_recall")]
    means = {subset: {k: round(float(np.mean([r[k] for r in rows if r["subset"] == subset])), 4) for k in keys}
             for subset in ("curated", "random")}
    return {"benchmark": "curation_downstream", "summary": "mean over seeds",
            "seeds": sorted({r["seed"] for r in rows}), **means,
            "curated_minus_random": {k: round(means["curated"][k] - means["random"][k], 4) for k in keys}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--ratio", type=float, default=15.0, help="head class size / tail class size in the pool")
    parser.add_argument("--cap", type=int, default=50, help="MetaCLIP's t")
    parser.add_argument("--pool-seed", type=int, default=0, help="class order and digits kept in the pool")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="curation_downstream-") as tmp:
        work = Path(tmp)
        pool, order = long_tailed_pool(args.ratio, args.pool_seed)
        write_webdataset(pool, work / "pool" / "shard-%06d.tar", samples_per_shard=256)
        entries = work / "entries.txt"
        entries.write_text("".join(f"{name}\n" for name in DIGIT_NAMES))
        pool_counts = class_counts(work / "pool", order)
        tail = order[-TAIL:]
        print(json.dumps({"benchmark": "curation_downstream", "pool": len(pool), "class_counts": pool_counts,
                          "ratio": args.ratio, "cap": args.cap, "tail": [DIGIT_NAMES[c] for c in tail]}), flush=True)
        rows = []
        for seed in args.seeds:
            size = curated_subset(work / "pool", work / f"curated-{seed}", entries, args.cap, seed)
            pick = np.random.default_rng([seed, 1]).choice(len(pool), size, replace=False)
            write_webdataset(pool.subset(torch.as_tensor(np.sort(pick))), work / f"random-{seed}" / "shard-%06d.tar",
                             samples_per_shard=256)
            for subset in ("curated", "random"):
                shards = work / f"{subset}-{seed}"
                run_dir = work / f"run-{subset}-{seed}"
                results, seconds = pretrain_and_evaluate(shards, run_dir, seed)
                rows.append(row(subset, seed, class_counts(shards, order), results,
                                zeroshot_recalls(run_dir, results), tail, seconds))
                print(json.dumps(rows[-1]), flush=True)
                shutil.rmtree(run_dir)
        print(json.dumps(summary(rows)), flush=True)


if __name__ == "__main__":
    main()
