"""transferlab's pretraining against open_clip's own trainer (`python -m open_clip_train.main`, open_clip_torch
3.3.0) on identical work, side by side in one run.

Both train the same network from the same initialisation: an open_clip model config (default: `ViT-XS-32`
below, registered from a JSON file; `--model ViT-S-32-alt` for the stock one) built by open_clip, in transferlab
as `openclip:<config>` towers (models/openclip_towers.py; the same weights for the same seed, tested). Same
steps, batch size, AdamW (lr, betas, eps, weight decay on matrices only), warm-up + cosine schedule, CLIP loss
with a learnable temperature clamped at 100, no gradient clipping, no augmentation (open_clip's random crop
pinned to the whole image: `--aug-cfg scale='(1.0, 1.0)' ratio='(1.0, 1.0)'`), one process, float32 unless a
case says otherwise, torch's default threads. Cases:

- `csv`: the first steps x batch mnist5k digits written as 28x28 PNG files with a CSV of distinct descriptive
  captions (benchmarks/peer_clip_benchmark.py `write_data`), read by open_clip as `--dataset-type csv` and by
  transferlab as a `table` source, each resizing to 224 bicubically. Also compares the loss after the same
  steps: the mean of the last 5 steps' losses, per seed, averaged over the seeds (the two tools start from the
  same weights for a seed but draw different batch orders, so single runs differ by the order's noise).
- `synthetic`: open_clip's `--dataset-type synthetic` (one black image, "Dummy caption"); transferlab reads the
  same image and caption from a folder of PNG copies.
- `bf16`: transferlab's own bf16 autocast against its float32 on the `csv` data, same batches: speed-up and
  the loss curve's largest relative deviation.

Throughput is steady state: the per-step times each tool logs (`--log-every-n-steps 1`; transferlab
`log_every: 1`), the first `--skip` steps excluded; a step's time covers data, forward, backward, optimizer
step and logging. Runs alternate between the tools, `--repeats` times; the median of each tool's steady-state
samples/s is reported, and their ratio. One JSON line per case.

    python benchmarks/peer_openclip_train.py                          # ~30 minutes on 2 CPU cores
    python benchmarks/peer_openclip_train.py --cases csv --repeats 1  # a quicker look
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from statistics import mean, median

import yaml

ROOT = Path(__file__).resolve().parent.parent
PEER_MAIN = ROOT / "benchmarks" / "_peer_openclip_main.py"
# A small ViT-B/32-shaped CLIP: 224 px, patch 32, a 6-layer 256-wide image and text transformer (25M parameters,
# 12.6M of them the text token embedding).
XS_CONFIG = {"embed_dim": 256,
             "vision_cfg": {"image_size": 224, "layers": 6, "width": 256, "patch_size": 32},
             "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 256, "heads": 4, "layers": 6}}
OPENAI_MEAN, OPENAI_STD = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]
STEP_LINE = re.compile(r"Train Epoch: \d+ \[\s*(\d+)/.*?Batch \(t\): [0-9.]+, ([0-9.]+)/s.*? Loss: ([0-9.]+)")


def write_csv_case(work: Path, rows: int) -> Path:
    """mnist5k PNGs with distinct captions; a table of the first `rows` of them (image, caption)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from peer_clip_benchmark import write_data

    table = write_data(work)["table"]
    lines = table.read_text().splitlines()
    subset = work / "mnist" / "train.csv"
    subset.write_text("\n".join(lines[:rows + 1]) + "\n")
    return subset


def write_synthetic_case(work: Path, rows: int, size: int) -> Path:
    """open_clip's synthetic sample (a black RGB image of the model's size, "Dummy caption") as PNG files."""
    from PIL import Image

    folder = work / "synthetic"
    (folder / "images").mkdir(parents=True)
    Image.new("RGB", (size, size)).save(folder / "images" / "black.png")
    for i in range(1, rows):
        shutil.copy(folder / "images" / "black.png", folder / "images" / f"black{i}.png")
    names = ["black.png"] + [f"black{i}.png" for i in range(1, rows)]
    (folder / "train.csv").write_text("image,caption\n" + "".join(f"images/{n},Dummy caption\n" for n in names))
    return folder / "train.csv"


def transferlab_recipe(config: Path, embed_dim: int, table: Path, args, precision: str, seed: int) -> dict:
    tower = {"name": f"openclip:{config}"}
    return {
        "name": "peer-openclip", "seed": seed, "device": "cpu",
        "datasets": {"bench": {"source": "table", "table": str(table), "image_column": "image",
                               "caption_column": "caption", "splits": {"train": 1.0, "val": 0.0, "test": 0.0}}},
        "model": {"image": tower, "text": {**tower, "locked": False}, "embed_dim": embed_dim, "image_size": 224,
                  "channels": 3, "mean": OPENAI_MEAN, "std": OPENAI_STD, "init_temperature": 0.07},
        "train": {"data": "bench", "objective": "clip", "steps": args.steps, "batch_size": args.batch_size,
                  "optimizer": "adamw", "lr": args.lr, "weight_decay": args.wd, "betas": [0.9, 0.98], "eps": 1e-6,
                  "warmup_steps": args.warmup, "schedule": "cosine", "grad_clip": None, "positives": "pair",
                  "augment": {"enabled": False}, "precision": precision, "log_every": 1,
                  "checkpoint_every": args.steps, "keep_checkpoints": 1},
        "eval": {"datasets": ["bench"]},
    }


def transferlab_run(work: Path, config: str, embed_dim: int, table: Path, args, precision: str, seed: int) -> dict:
    out = work / "transferlab-run"
    recipe_file = work / "recipe.yaml"
    recipe_file.write_text(yaml.safe_dump(transferlab_recipe(config, embed_dim, table, args, precision, seed)))
    done = subprocess.run([str(Path(sys.executable).parent / "transferlab"), "pretrain", str(recipe_file),
                           "--out", str(out)], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"transferlab failed:\n{done.stderr[-3000:]}")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    shutil.rmtree(out)
    return {"samples_per_s": [r["samples_per_s"] for r in rows], "loss": [r["loss"] for r in rows]}


def run_open_clip(work: Path, config: Path | None, model: str, data: list[str], table: Path, args,
                  seed: int) -> dict:
    logs = work / "open_clip-logs"
    command = [sys.executable, str(PEER_MAIN), *(["--openclip-config", str(config)] if config else []),
               "--model", model, *data, "--batch-size", str(args.batch_size), "--epochs", "1", "--lr", str(args.lr),
               "--wd", str(args.wd), "--beta1", "0.9", "--beta2", "0.98", "--eps", "1e-6", "--warmup",
               str(args.warmup), "--lr-scheduler", "cosine", "--precision", "fp32", "--workers",
               str(args.openclip_workers), "--device", "cpu", "--save-frequency", "0", "--log-every-n-steps", "1",
               "--seed", str(seed), "--logs", str(logs), "--name", "run",
               "--aug-cfg", "scale=(1.0,1.0)", "ratio=(1.0,1.0)"]
    done = subprocess.run(command, capture_output=True, text=True, cwd=table.parent)  # its CSV paths: from the cwd
    log = logs / "run" / "out.log"
    if done.returncode or not log.is_file():
        raise SystemExit(f"open_clip failed:\n{done.stderr[-3000:]}")
    steps = STEP_LINE.findall(log.read_text())
    shutil.rmtree(logs)
    if len(steps) != args.steps:
        raise SystemExit(f"open_clip logged {len(steps)} steps, expected {args.steps}: see its out.log format")
    return {"samples_per_s": [float(s) for _, s, _ in steps], "loss": [float(loss) for _, _, loss in steps]}


def steady(run: dict, batch: int, skip: int) -> float:
    """Samples per second over the steps after the first `skip`: total samples over total time."""
    rates = run["samples_per_s"][skip:]
    return len(rates) * batch / sum(batch / r for r in rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="ViT-XS-32", help="an open_clip config name, or ViT-XS-32 (this file's)")
    parser.add_argument("--cases", nargs="+", default=["csv", "synthetic", "bf16"])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--skip", type=int, default=5, help="warm-up steps left out of the throughput")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--wd", type=float, default=0.1)
    parser.add_argument("--warmup", type=int, default=10, help="learning-rate warm-up steps")
    parser.add_argument("--repeats", type=int, default=3, help="runs per tool and case; repeat r uses seed r")
    parser.add_argument("--openclip-workers", type=int, default=1, help="open_clip's --workers (DataLoader "
                                                                         "processes)")
    args = parser.parse_args()
    import open_clip
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.model == "ViT-XS-32":
            config, spec = work / "ViT-XS-32.json", XS_CONFIG
            config.write_text(json.dumps(spec))
        else:
            config, spec = None, open_clip.get_model_config(args.model)
        reference = str(config) if config else args.model
        rows = args.steps * args.batch_size
        tables = {}
        for case in args.cases:
            key = "synthetic" if case == "synthetic" else "csv"
            if key not in tables:
                tables[key] = (write_synthetic_case(work, rows, spec["vision_cfg"]["image_size"]) if key == "synthetic"
                               else write_csv_case(work, rows))
        for case in args.cases:
            table = tables["synthetic" if case == "synthetic" else "csv"]
            tl = functools.partial(transferlab_run, work, reference, spec["embed_dim"], table, args)
            if case == "bf16":
                contenders = {"fp32": functools.partial(tl, "fp32"), "bf16": functools.partial(tl, "bf16")}
            else:
                peer_data = (["--dataset-type", "synthetic", "--train-num-samples", str(rows)] if case == "synthetic"
                             else ["--train-data", str(table), "--dataset-type", "csv", "--csv-separator", ",",
                                   "--csv-img-key", "image", "--csv-caption-key", "caption"])
                model = Path(reference).stem if config else args.model
                peer = functools.partial(run_open_clip, work, config, model, peer_data, table, args)
                contenders = {"open_clip": peer, "transferlab": functools.partial(tl, "fp32")}
            results: dict[str, list[dict]] = {name: [] for name in contenders}
            for seed in range(args.repeats):  # repeat r: seed r for both tools (the same initial weights)
                for name in list(contenders)[::1 if seed % 2 == 0 else -1]:  # alternate who goes first
                    results[name].append(contenders[name](seed=seed))
            speeds = {name: median(steady(run, args.batch_size, args.skip) for run in runs)
                      for name, runs in results.items()}
            slow, fast = list(results)
            row = {"benchmark": "peer_openclip_train", "case": case, "model": args.model, "steps": args.steps,
                   "batch_size": args.batch_size, "measured_steps": args.steps - args.skip, "repeats": args.repeats,
                   "torch": torch.__version__, "open_clip": open_clip.__version__,
                   "openclip_workers": args.openclip_workers,
                   **{f"{name}_samples_per_s": round(v, 2) for name, v in speeds.items()},
                   "speedup": round(speeds[fast] / speeds[slow], 3)}
            if case != "synthetic":  # the synthetic loss is ln(batch) forever: nothing to compare
                per_seed = {name: [mean(run["loss"][-5:]) for run in runs] for name, runs in results.items()}
                last = {name: mean(values) for name, values in per_seed.items()}
                row.update({f"{name}_loss_last5_per_seed": [round(v, 4) for v in values]
                            for name, values in per_seed.items()},
                           loss_chance=round(math.log(args.batch_size), 4),
                           loss_rel_diff=round(abs(last[fast] - last[slow]) / last[slow], 4))
            if case == "bf16":
                curves = [(a, b) for a, b in zip(results["fp32"][0]["loss"], results["bf16"][0]["loss"], strict=True)]
                deviations = [abs(b - a) / a for a, b in curves]
                row.update(loss_curve_max_rel_dev=round(max(deviations), 4),
                           loss_curve_mean_rel_dev=round(mean(deviations), 4))
                row.update({f"{name}_loss_first": round(runs[0]["loss"][0], 4) for name, runs in results.items()})
            row["load_average_1min"] = round(os.getloadavg()[0], 2)  # the machine is shared: how busy it was
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
