"""One command for a short slot on a GPU node: transferlab against its peers, row by row, within 8 minutes.

    python benchmarks/gpu_node.py           # on a CUDA machine (one H100/H200, 16 cores): every row
    python benchmarks/gpu_node.py --tiny    # the same rows at toy sizes on any machine (< 2 minutes on 2 CPU cores)
    python benchmarks/gpu_node.py --rows adamw8bit loader                  # some rows only

Install once, with network: `pip install -e '.[gpu-bench]'` (bitsandbytes, clip-benchmark); nothing is
downloaded when it runs (random weights, generated data, HF_HUB_OFFLINE=1). docs/speed.md says how to read it.
Every row is transferlab against its peer measured in this run, alternated (who goes first alternates over
`repeats`), and prints one JSON line as soon as it is done; a markdown table of all rows ends the run. The
device is CUDA when there is one, else the CPU; the code is the same, only the sizes (`FULL`, `TINY`) differ.

- pretrain_synthetic / pretrain_stream: steady-state pretraining samples/s (the first `skip` steps left out)
  and peak device memory of an open_clip model (ViT-B-32 image and text towers, 224 px, batch 256, bf16
  autocast, AdamW, no clipping) trained by transferlab (`openclip:<config>` towers, in this process) and by
  open_clip's own trainer (`open_clip_train.main`, a subprocess, as benchmarks/peer_openclip_train.py runs
  it). synthetic: open_clip's `--dataset-type synthetic` (a black image, "Dummy caption") against transferlab
  holding the same black images in device memory; stream: a generated JPEG pool (benchmarks/_stream_pool.py)
  streamed from local disk by `train_workers` loader processes each (open_clip: `--dataset-type webdataset`;
  transferlab: a streamed webdataset source), random resized crops of scale 0.9-1 for both, with each tool's
  share of step time spent waiting for data.
- compile: transferlab's synthetic run with `train.compile: true` against the same run uncompiled (steady
  state after compiling; the first window, which compiles, reported apart).
- loader: the streaming loader alone, images/s of normalised 224 px crops with 4, 8 and 15 workers, against
  the webdataset pipeline as open_clip builds it (benchmarks/stream_loader.py's two functions).
- zeroshot: zero-shot classification images/s (class weights, image pass, predictions; dataset reading
  included, model loading not) of the same random-init model on the pool in CLIP_benchmark's layout:
  transferlab's suite runner against clip_benchmark's own functions (its dataset builder and DataLoader,
  `zero_shot_classifier`, `run_classification`), both float32, in this process.
- adamw8bit: one optimizer step on the model's parameters, transferlab's AdamW8bit against bitsandbytes'
  (benchmarks/adamw8bit_step.py: fresh processes, steps alternated, medians).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from statistics import median

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # bitsandbytes looks for a hub kernel on import
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _gpu_node_runs as runs  # noqa: E402
from _stream_pool import write_pool  # noqa: E402

ROWS = ("pretrain_synthetic", "pretrain_stream", "loader", "zeroshot", "adamw8bit", "compile")
TINY_MODEL = {"embed_dim": 64, "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8},
              "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2}}


@dataclass(frozen=True)
class Settings:
    model: str  # an open_clip config name, or "tiny" (TINY_MODEL, registered from a file)
    image_size: int
    batch: int
    steps: int
    log_every: int
    skip: int  # warm-up steps left out of the pretraining throughput
    precision: str  # transferlab's train.precision; open_clip gets amp_<it>
    pool_images: int
    shards: int
    train_workers: int
    loader_workers: tuple[int, ...]
    loader_batch: int
    eval_batch: int
    eval_workers: int
    adamw_model: str  # adamw8bit_step.py's --model
    adamw_processes: int  # fresh processes measured; 0: one run in this one
    adamw_rounds: int
    repeats: int
    compile: bool
    budget_minutes: float


FULL = Settings(model="ViT-B-32", image_size=224, batch=256, steps=40, log_every=10, skip=10, precision="bf16",
                pool_images=10240, shards=32, train_workers=8, loader_workers=(4, 8, 15), loader_batch=256,
                eval_batch=256, eval_workers=8, adamw_model="ViT-B-32", adamw_processes=3, adamw_rounds=30,
                repeats=2, compile=True, budget_minutes=8)
TINY = Settings(model="tiny", image_size=32, batch=8, steps=4, log_every=2, skip=2, precision="bf16",
                pool_images=64, shards=4, train_workers=1, loader_workers=(1, 2), loader_batch=16, eval_batch=32,
                eval_workers=1, adamw_model="tiny", adamw_processes=0, adamw_rounds=3, repeats=1, compile=False,
                budget_minutes=2)


def log(message: str) -> None:
    print(f"[gpu_node] {message}", file=sys.stderr, flush=True)


def alternated(contenders: dict, repeats: int) -> dict[str, list]:
    """Each contender's results over `repeats` rounds, who goes first alternating (round r: seed r)."""
    results: dict[str, list] = {name: [] for name in contenders}
    for repeat in range(repeats):
        for name in list(contenders)[:: 1 if repeat % 2 == 0 else -1]:
            results[name].append(contenders[name](repeat))
    return results


def row_pretrain(case: str, work: Path, s: Settings, device: str) -> dict:
    results = alternated({"transferlab": lambda seed: runs.transferlab_pretrain(work, s, device, case, seed),
                          "open_clip": lambda seed: runs.openclip_pretrain(work, s, device, case, seed)}, s.repeats)
    row = {"model": s.model, "batch": s.batch, "steps": s.steps, "measured_steps": s.steps - s.skip,
           "precision": s.precision, "workers": s.train_workers if case == "stream" else None}
    for name, done in results.items():
        row[f"{name}_samples_per_s"] = round(median(r.samples_per_s(s.batch, s.skip) for r in done), 1)
        row[f"{name}_peak_memory_gib"] = max((r.peak_memory_gib for r in done), default=None)
        if case == "stream":
            row[f"{name}_data_wait"] = round(median(r.data_share(s.batch, s.skip) for r in done), 3)
    row["ratio"] = round(row["transferlab_samples_per_s"] / row["open_clip_samples_per_s"], 3)
    return row


def row_compile(work: Path, s: Settings, device: str) -> dict:
    if not s.compile:
        return {"skipped": "torch.compile takes minutes on a CPU: run without --tiny on the GPU node"}
    results = alternated({"compiled": lambda seed: runs.transferlab_pretrain(work, s, device, "synthetic", seed, True),
                          "eager": lambda seed: runs.transferlab_pretrain(work, s, device, "synthetic", seed)}, 1)
    compiled, eager = results["compiled"][0], results["eager"][0]
    row = {"compiled_samples_per_s": round(compiled.samples_per_s(s.batch, s.skip), 1),
           "eager_samples_per_s": round(eager.samples_per_s(s.batch, s.skip), 1),
           "first_window_seconds": {"compiled": round(compiled.seconds[0], 1), "eager": round(eager.seconds[0], 1)}}
    row["ratio"] = round(row["compiled_samples_per_s"] / row["eager_samples_per_s"], 3)
    return row


def row_loader(pool: Path, s: Settings) -> dict:
    from stream_loader import run_transferlab, run_webdataset

    from transferlab.config import WebDatasetSource
    from transferlab.data.readers.webdataset import read_webdataset

    data = read_webdataset(WebDatasetSource(source="webdataset", shards=str(pool)), "pool", 224, 3, stream=True)
    shards = sorted(str(p) for p in pool.glob("*.tar"))
    row = {"images": len(data), "batch": s.loader_batch}
    for workers in s.loader_workers:
        results = alternated({"transferlab": lambda seed, w=workers: run_transferlab(data, s.loader_batch, w, seed)[0],
                              "webdataset": lambda seed, w=workers: run_webdataset(shards, s.loader_batch, w, False,
                                                                                   seed)[0]}, s.repeats)
        tl, wd = median(results["transferlab"]), median(results["webdataset"])
        row[f"workers_{workers}"] = {"transferlab_images_per_s": round(tl, 1), "webdataset_images_per_s": round(wd, 1),
                                     "ratio": round(tl / wd, 3)}
    return row


def row_zeroshot(work: Path, pool_root: Path, s: Settings, device: str) -> dict:
    model = runs.saved_model(work, s)
    contenders = {"transferlab": lambda seed: runs.transferlab_zeroshot(work, model, pool_root, s, device)}
    missing = runs.missing("clip_benchmark")
    if missing is None:
        contenders["clip_benchmark"] = lambda seed: runs.clip_benchmark_zeroshot(model, pool_root, s, device)
    results = alternated(contenders, s.repeats)
    row = {"images": s.pool_images, "batch": s.eval_batch, "workers": s.eval_workers, "precision": "fp32"}
    for name, rates in results.items():
        row[f"{name}_images_per_s"] = round(median(rates), 1)
    if missing is None:
        row["ratio"] = round(row["transferlab_images_per_s"] / row["clip_benchmark_images_per_s"], 3)
    else:
        row["peer_skipped"] = missing
    return row


def row_adamw8bit(work: Path, s: Settings, device: str) -> dict:
    missing = runs.missing("bitsandbytes")
    if missing is not None:
        return {"skipped": missing}
    from adamw8bit_step import measure

    model = str(runs.model_config_file(work)) if s.adamw_model == "tiny" else s.adamw_model
    return measure(model, device, s.adamw_processes, s.adamw_rounds)


def table(rows: list[dict]) -> str:
    lines = ["| row | transferlab | peer | transferlab / peer | notes |", "|---|---|---|---|---|"]
    for row in rows:
        name = row["row"]
        if "skipped" in row:
            lines.append(f"| {name} | | | | skipped: {row['skipped']} |")
        elif name == "loader":
            for key in (k for k in row if k.startswith("workers_")):
                r = row[key]
                lines.append(f"| loader, {key.split('_')[1]} workers | {r['transferlab_images_per_s']} images/s | "
                             f"{r['webdataset_images_per_s']} images/s (webdataset) | {r['ratio']} | |")
        elif name == "compile":
            lines.append(f"| compile | {row['compiled_samples_per_s']} samples/s compiled | "
                         f"{row['eager_samples_per_s']} samples/s eager | {row['ratio']} | first window (s): "
                         f"{row['first_window_seconds']} |")
        elif name == "adamw8bit":
            lines.append(f"| adamw8bit ({row['params'] / 1e6:.1f}M params) | {row['transferlab_ms']} ms | "
                         f"{row['bitsandbytes_ms']} ms (bitsandbytes) | {row['time_vs_bitsandbytes']} (time) | "
                         f"spread {row['transferlab_spread']} vs {row['bitsandbytes_spread']} |")
        elif name == "zeroshot":
            peer = row.get("clip_benchmark_images_per_s")
            lines.append(f"| zeroshot | {row['transferlab_images_per_s']} images/s | "
                         f"{'' if peer is None else f'{peer} images/s (clip_benchmark)'} | {row.get('ratio', '')} | "
                         f"{row.get('peer_skipped', '')} |")
        else:
            notes = f"peak memory (GiB) {row['transferlab_peak_memory_gib']} vs {row['open_clip_peak_memory_gib']}"
            if name == "pretrain_stream":
                notes += f"; data wait {row['transferlab_data_wait']} vs {row['open_clip_data_wait']}"
            lines.append(f"| {name} | {row['transferlab_samples_per_s']} samples/s | {row['open_clip_samples_per_s']} "
                         f"samples/s (open_clip) | {row['ratio']} | {notes} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="toy sizes: every row in under 2 minutes on a CPU")
    parser.add_argument("--rows", nargs="+", choices=ROWS, default=list(ROWS))
    parser.add_argument("--device", default=None, help="default: cuda when there is one, else cpu")
    parser.add_argument("--repeats", type=int, default=None, help="rounds per row (who goes first alternates)")
    args = parser.parse_args()
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    s = TINY if args.tiny else FULL
    if not args.tiny and device == "cpu":
        s = replace(s, adamw_model="ViT-S-32:visual")  # the CPU's full-size row: 22M parameters
        if set(args.rows) != {"adamw8bit"}:
            log("no CUDA device: the full sizes would take hours on a CPU; use --tiny (or --rows adamw8bit)")
            return 2
    s = replace(s, repeats=args.repeats or s.repeats)
    started, rows = time.perf_counter(), []
    work = Path(tempfile.mkdtemp(prefix="tl-gpu-node-", dir=os.environ.get("TMPDIR", "/tmp")))
    try:
        pool_root = work / "pool"
        if {"pretrain_stream", "loader", "zeroshot"} & set(args.rows):
            written = write_pool(pool_root / "test", s.pool_images, s.shards, processes=os.cpu_count() or 2,
                                 name="{}.tar", classes=runs.CLASSES)
            runs.clip_benchmark_layout(pool_root, len(written["shards"]))
            log(f"pool: {written['images']} JPEGs in {len(written['shards'])} shards, {written['seconds']:.1f}s")
        runs.prepare(work, s, TINY_MODEL)
        for name in [r for r in ROWS if r in args.rows]:
            elapsed = (time.perf_counter() - started) / 60
            if elapsed > s.budget_minutes:
                result = {"skipped": f"the run's {s.budget_minutes} minutes were spent ({elapsed:.1f})"}
            elif name.startswith("pretrain_"):
                result = row_pretrain(name.removeprefix("pretrain_"), work, s, device)
            elif name == "compile":
                result = row_compile(work, s, device)
            elif name == "loader":
                result = row_loader(pool_root / "test", s)
            elif name == "zeroshot":
                result = row_zeroshot(work, pool_root, s, device)
            else:
                result = row_adamw8bit(work, s, device)
            row = {"benchmark": "gpu_node", "row": name, "device": runs.device_name(device), "tiny": args.tiny,
                   **result, "seconds": round(time.perf_counter() - started, 1)}
            rows.append(row)
            print(json.dumps(row), flush=True)
        print(table(rows), flush=True)
        log(f"done in {(time.perf_counter() - started) / 60:.1f} minutes")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
