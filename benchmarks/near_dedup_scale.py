"""Near dedup at pool scale: the inverted-file search on a million embeddings, streamed from shard work
files, against the exact all-pairs search on a subsample.

The pool is synthetic, seeded, and has known duplicate clusters: rows are unit vectors around 256
"topics" (cosine about 0.6 to their topic, so the pool is clustered as real embeddings are, not uniform
on the sphere), and a quarter of them come in clusters of 2-5 noisy copies whose cosine similarity to
each other is 0.965-0.995 on average; every other pair is far below the threshold 0.95, so the clusters
are the exact answer (checked on the subsample). The rows are shuffled, so copies sit in different shards,
and written as the count stage's work files (`<shard>.count.npz`, deleted at the end); the plan stage's
reader streams them to `near_duplicates`, which holds only the index.

1. The whole pool through the inverted file (the plan stage's path beyond EXACT_LIMIT rows): time, peak
   memory, recall of the duplicate pairs and of the drop mask against the clusters.
2. A subsample of whole clusters, 100,000 rows, searched exactly (IndexFlatIP) and with the inverted file:
   time, peak memory, and the inverted file's recall of the exact search's pairs and drop mask; and how far
   float16 storage would move the similarities of the pairs found.

Peak memory is the high-water resident set size (VmHWM in /proc/self/status), reset before each step by
writing 5 to /proc/self/clear_refs (Linux); "over_start" subtracts the resident size at the step's start.

    python benchmarks/near_dedup_scale.py [--rows 1000000 --dim 256 --shards 100 --subsample 100000]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from transferlab.curate import workfiles
from transferlab.curate.dedup import EXACT_LIMIT, NPROBE, InMemory, near_duplicate_pairs
from transferlab.curate.plan import ShardEmbeddings

THRESHOLD = 0.95
TOPICS = 256
NAME = "image_embeddings"
FINGERPRINT = "near-dedup-bench"


def memory_mib(field: str) -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) / 1024 for line in status if line.startswith(field + ":"))


def reset_peak() -> float:
    """Resets the high-water mark; returns the resident size now."""
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")
    return memory_mib("VmRSS")


def clusters(rows: int, rng: np.random.Generator) -> np.ndarray:
    """Per row (in pool order) its cluster id; singletons have clusters of their own."""
    sizes = np.where(rng.random(rows) < 0.1, rng.integers(2, 6, size=rows), 1)
    sizes = sizes[:np.searchsorted(np.cumsum(sizes), rows) + 1]
    sizes[-1] -= sizes.sum() - rows
    return rng.permutation(np.repeat(np.arange(len(sizes)), sizes))


def write_pool(folder: Path, label: np.ndarray, dim: int, shards: int, seed: int) -> list[Path]:
    """The rows as count work files, shard by shard (so generating holds one shard, the cluster centres)."""
    rng = np.random.default_rng(seed)
    topics = rng.normal(size=(TOPICS, dim))
    topics /= np.linalg.norm(topics, axis=1, keepdims=True)

    def around_topics(count: int) -> np.ndarray:
        centres = 0.6 * topics[rng.integers(0, TOPICS, count)] + 0.8 * rng.normal(size=(count, dim)) / np.sqrt(dim)
        return centres / np.linalg.norm(centres, axis=1, keepdims=True)

    sizes = np.bincount(label)
    copied = np.flatnonzero(sizes > 1)
    slot = np.full(len(sizes), -1)
    slot[copied] = np.arange(len(copied))
    centres = around_topics(len(copied)).astype(np.float32)
    within = rng.uniform(0.965, 0.995, size=len(copied))  # the cosine similarity of two copies, about
    sigma = np.sqrt((1 / within - 1) / dim)
    paths = []
    for shard, rows in enumerate(np.array_split(np.arange(len(label)), shards)):
        where = slot[label[rows]]
        block = around_topics(len(rows))
        copy = where >= 0
        block[copy] = centres[where[copy]] + sigma[where[copy], None] * rng.normal(size=(copy.sum(), dim))
        paths.append(Path(f"pool-{shard:05d}.tar"))
        workfiles.save(workfiles.path(folder, "count", paths[-1]), FINGERPRINT, {},
                       **{NAME: block.astype(np.float32)})
    return paths


def true_pairs(label: np.ndarray) -> np.ndarray:
    """The pairs of rows in one cluster, each as earlier * n + later, sorted."""
    order = np.argsort(label, kind="stable")
    ends = np.flatnonzero(np.r_[label[order][1:] != label[order][:-1], True]) + 1
    pairs = [members[i] * len(label) + members[i + 1:] for members in np.split(order, ends[:-1]) if len(members) > 1
             for i in range(len(members) - 1)]
    return np.unique(np.concatenate(pairs)) if pairs else np.zeros(0, dtype=np.int64)


def search(rows, **options) -> dict:
    """Time, peak memory, the pairs found and the drop mask of one near-duplicate search."""
    start_rss = reset_peak()
    start = time.perf_counter()
    pairs, mask = [], np.zeros(len(rows), dtype=bool)
    for earlier, later in near_duplicate_pairs(rows, THRESHOLD, **options):
        pairs.append(earlier * len(rows) + later)
        mask[later] = True
    pairs = np.unique(np.concatenate(pairs)) if pairs else np.zeros(0, dtype=np.int64)
    seconds = time.perf_counter() - start
    peak = memory_mib("VmHWM")
    return {"seconds": round(seconds, 1), "peak_rss_mib": round(peak), "peak_over_start_mib": round(peak - start_rss),
            "pairs": pairs, "mask": mask}


def recall(found: dict, truth_pairs: np.ndarray, truth_mask: np.ndarray) -> dict:
    hits = int(np.isin(found["pairs"], truth_pairs, assume_unique=True).sum())
    return {"pair_recall": round(hits / max(1, len(truth_pairs)), 5), "false_pairs": len(found["pairs"]) - hits,
            "mask_recall": round(float((found["mask"] & truth_mask).sum() / max(1, truth_mask.sum())), 5),
            "false_drops": int((found["mask"] & ~truth_mask).sum())}


def report(step: str, found: dict, **extra) -> None:
    print(json.dumps({"benchmark": "near_dedup_scale", "step": step, "threshold": THRESHOLD,
                      **{k: v for k, v in found.items() if k not in ("pairs", "mask")}, **extra}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--shards", type=int, default=100)
    parser.add_argument("--subsample", type=int, default=100_000)
    parser.add_argument("--nprobe", type=int, default=NPROBE)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tmp", type=Path, default=None, help="where the work files go (default: the system's)")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    folder = Path(tempfile.mkdtemp(prefix="near-dedup-bench-", dir=args.tmp))
    common = {"rows": args.rows, "dim": args.dim, "cpus": os.cpu_count(), "nprobe": args.nprobe,
              "load_average_before": round(os.getloadavg()[0], 2)}
    try:
        start = time.perf_counter()
        label = clusters(args.rows, rng)
        shards = write_pool(folder, label, args.dim, args.shards, args.seed)
        disk = sum(p.stat().st_size for p in (folder / "work").iterdir())
        print(f"pool: {args.rows:,} rows, {disk / 2**20:.0f} MiB of work files in {time.perf_counter() - start:.0f} s",
              file=sys.stderr, flush=True)
        sizes = np.bincount(label)
        truth_mask = np.ones(args.rows, dtype=bool)
        truth_mask[np.unique(label, return_index=True)[1]] = False
        rows = ShardEmbeddings(shards, folder, FINGERPRINT, NAME, args.dim, np.ones(args.rows, dtype=bool),
                               [len(r) for r in np.array_split(np.arange(args.rows), args.shards)])
        found = search(rows, index="ivf", nprobe=args.nprobe, seed=args.seed)
        report("pool, inverted file, streamed from work files", found, **common, work_files_mib=round(disk / 2**20),
               float32_mib=round(args.rows * args.dim * 4 / 2**20),
               duplicate_pairs=int((sizes * (sizes - 1) // 2).sum()), **recall(found, true_pairs(label), truth_mask))
        del found

        # whole clusters, about `subsample` rows, in pool order
        chosen = np.random.default_rng(args.seed + 1).random(len(sizes)) < args.subsample / args.rows
        rows_in = np.flatnonzero(chosen[label])
        keep, start = chosen[label], 0
        parts = []
        for block in rows.blocks():
            parts.append(block[keep[start:start + len(block)]])
            start += len(block)
        vectors = np.concatenate(parts)
        sub_label = label[rows_in]
        sub_truth = np.ones(len(rows_in), dtype=bool)
        sub_truth[np.unique(sub_label, return_index=True)[1]] = False
        sample = InMemory(vectors)
        common.update(rows=len(rows_in))
        exact = search(sample, index="exact")
        exact_truth = recall(exact, true_pairs(sub_label), sub_truth)
        report("subsample, exact", exact, **common, duplicate_pairs=len(exact["pairs"]),
               exact_is_the_clusters=exact_truth["pair_recall"] == 1 and exact_truth["false_pairs"] == 0,
               exact_limit=EXACT_LIMIT)
        approximate = search(sample, index="ivf", nprobe=args.nprobe, seed=args.seed)
        report("subsample, inverted file", approximate, **common, speedup=round(exact["seconds"] /
                                                                                  approximate["seconds"], 1),
               **recall(approximate, exact["pairs"], exact["mask"]))
        pairs = np.stack(np.divmod(exact["pairs"], len(rows_in)), axis=1)
        unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        half = unit.astype(np.float16).astype(np.float32)
        shift = np.abs((half[pairs[:, 0]] * half[pairs[:, 1]]).sum(1) - (unit[pairs[:, 0]] * unit[pairs[:, 1]]).sum(1))
        print(json.dumps({"benchmark": "near_dedup_scale", "step": "subsample, float16 storage",
                          "max_similarity_shift": float(shift.max()), "mean_similarity_shift": float(shift.mean())}),
              flush=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
