"""Peak memory of streamed pretraining: `transferlab pretrain` on a whole pool against the same recipe on a
10% subset of its shards. Streaming holds, per sample, where its image lies and its captions, never its
pixels, so the whole pool should cost little more than the subset.

The pool (benchmarks/_stream_pool.py, written to a temporary folder by 2 processes and deleted at the end)
holds `--images` JPEG image-caption pairs (W, H in 96-512 px, JPEG quality `--quality`, a distinct caption
each) in `--shards` tar shards. Its writing is timed, and so is the index pass alone (`read_webdataset(...,
stream=True)` over the whole pool, in a fresh process, with that process's VmHWM).

Both runs train the same small recipe (below: cnn-small at 64 px RGB, a tiny trainable text transformer,
so no frozen encoder embeds every caption up front, `--steps` steps of batch `--batch-size`, no eval) with
`datasets.pool.stream=true`, the shards given as a brace pattern: all of them, or the first tenth. The
subset runs first. While a run lasts, its process tree (the `transferlab pretrain` process and its loader
workers) is sampled every 0.1 s: the summed RSS (which counts pages a forked worker still shares with its
parent twice) and the summed PSS (shared pages split among the processes sharing them; /proc smaps_rollup),
each at its peak; the main process's VmHWM (its own high-water RSS, read from /proc until it exits) and the
largest worker's RSS are reported too. Acceptance (issue 14): whole-pool peak ≤ 1.2x the subset's. The load
average is recorded before and after. One JSON line at the end.

    python benchmarks/stream_memory.py [--images 200000 --shards 200 --quality 30 --steps 30]
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _proc_memory import watch  # noqa: E402
from _stream_pool import write_pool  # noqa: E402

MIB = 2**20
INDEX_ONLY = """
import json, sys, time
from transferlab.config import WebDatasetSource
from transferlab.data.readers.webdataset import read_webdataset
started = time.perf_counter()
data = read_webdataset(WebDatasetSource(source="webdataset", shards=sys.argv[1]), "pool", 64, 3, stream=True)
seconds = time.perf_counter() - started
hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM"))
print(json.dumps({"samples": len(data), "seconds": seconds, "vmhwm_kib": hwm}))
"""


def recipe(pattern: str, steps: int, batch: int, workers: int | None) -> list[str]:
    sets = ["model.image.name=cnn-small", "model.image_size=64", "model.channels=3", "model.mean=[0.5,0.5,0.5]",
            "model.std=[0.5,0.5,0.5]", "model.text.name=text-transformer-tiny", "model.text.locked=false",
            f"train.steps={steps}", f"train.batch_size={batch}", "train.warmup_steps=5", "train.log_every=10",
            f"train.checkpoint_every={steps}", "datasets.pool.source=webdataset", f"datasets.pool.shards={pattern}",
            "datasets.pool.stream=true", "train.data=pool", "eval.datasets=[]"]
    if workers is not None:
        sets.append(f"train.loader_workers={workers}")
    return [arg for s in sets for arg in ("--set", s)]


def measured_run(command: list[str], cwd: Path, log: Path) -> dict:
    """Run `command`, sampling its process tree's memory every 0.1 s; the peaks and the wall time."""
    started = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(command, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
        peaks = watch(proc)
    if proc.returncode:
        raise SystemExit(f"{' '.join(command)} failed; see {log}:\n{log.read_text()[-3000:]}")
    return {"seconds": round(time.perf_counter() - started, 1), **peaks.mib()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=200_000)
    parser.add_argument("--shards", type=int, default=200)
    parser.add_argument("--quality", type=int, default=30, help="JPEG quality (small: a modest pool on disk)")
    parser.add_argument("--subset", type=float, default=0.1, help="share of the shards the subset run reads")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--loader-workers", type=int, default=None, help="train.loader_workers (default: the "
                                                                          "recipe's, one per core but one)")
    parser.add_argument("--keep", type=Path, default=None, help="write the pool here and keep it")
    args = parser.parse_args()

    load_before = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="tl-bench-memory-", dir="/tmp"))
    folder = args.keep or work / "pool"
    try:
        pool = write_pool(folder, args.images, args.shards, quality=args.quality, processes=2)
        shards = len(pool["shards"])
        stored = sum(Path(s).stat().st_size for s in pool["shards"])
        print(f"pool: {pool['images']} images in {shards} shards ({stored / MIB:.0f} MiB), written in "
              f"{pool['seconds']:.0f}s", file=sys.stderr, flush=True)
        last = shards - 1
        whole = f"{folder}/shard-{{000000..{last:06d}}}.tar"
        part = f"{folder}/shard-{{000000..{max(1, round(shards * args.subset)) - 1:06d}}}.tar"
        index = json.loads(subprocess.run([sys.executable, "-c", INDEX_ONLY, whole], check=True, capture_output=True,
                                          text=True).stdout.strip().splitlines()[-1])
        print(f"index pass: {index}", file=sys.stderr, flush=True)
        transferlab = str(Path(sys.executable).parent / "transferlab")
        runs = {}
        for label, pattern in (("subset", part), ("whole", whole)):
            command = [transferlab, "pretrain", "--out", str(work / f"run-{label}"),
                       *recipe(pattern, args.steps, args.batch_size, args.loader_workers)]
            runs[label] = measured_run(command, work, work / f"{label}.log")
            runs[label]["shards"] = pattern
            metrics = [json.loads(line) for line in (work / f"run-{label}" / "metrics.jsonl").read_text().splitlines()]
            runs[label]["samples_per_s_last"] = round(metrics[-1]["samples_per_s"], 1)
            print(f"{label}: {runs[label]}", file=sys.stderr, flush=True)
        ratio = {key: round(runs["whole"][key] / runs["subset"][key], 3)
                 for key in ("peak_tree_rss_mib", "peak_tree_pss_mib", "main_vmhwm_mib")}
        print(json.dumps({"benchmark": "stream_memory", "images": pool["images"], "shards": shards,
                          "stored_mib": round(stored / MIB, 1), "generation_seconds": round(pool["seconds"], 1),
                          "index_seconds": round(index["seconds"], 1), "index_samples": index["samples"],
                          "index_vmhwm_mib": round(index["vmhwm_kib"] / 1024, 1), "steps": args.steps,
                          "batch_size": args.batch_size, "subset": runs["subset"], "whole": runs["whole"],
                          "whole_over_subset": ratio, "load_average_before": round(load_before, 2),
                          "load_average_after": round(os.getloadavg()[0], 2)}))
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
