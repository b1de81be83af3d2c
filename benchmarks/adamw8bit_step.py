"""transferlab's AdamW8bit step against bitsandbytes' AdamW8bit on the same parameters, side by side.

The parameters are an open_clip model's (random init): `--model ViT-B-32` (both towers, 151M),
`--model ViT-S-32:visual` (the image tower only: 22M parameters of ViT-S shapes) or a config file, on
`--device`. Each of `--processes` fresh processes builds them twice, gives both optimizers the same
gradients (N(0, 1e-3)), takes 2 warm-up steps with each, then times `--rounds` single steps alternated
between the two (who goes first alternates; CUDA steps are synchronised before and after). Same
hyper-parameters: lr 1e-3, betas (0.9, 0.98), eps 1e-6, weight decay 0.1; both keep 8-bit moments for
tensors of at least 4096 values (bitsandbytes' min_8bit_size) and float32 ones below. transferlab keeps
its documented differences (stochastic rounding, √v codes). Per process: the median step time of each;
over processes: the median of those medians, each tool's spread (max - min) / median, and the ratio of
the medians. One JSON line. On a busy machine bitsandbytes' OpenMP threads spin-wait for each other and
its step slows several-fold; `--threads 1` (both tools single-threaded) gives a comparison that load does not
tilt.

    python benchmarks/adamw8bit_step.py --model ViT-S-32:visual --device cpu --wait-load 1.2   # BENCHMARKS.md's row
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from statistics import median

HYPER = {"lr": 1e-3, "betas": (0.9, 0.98), "eps": 1e-6, "weight_decay": 0.1}
SETTINGS = ("lr", "betas", "eps", "weight_decay")


def parameters(model: str, device: str, seed: int = 0):
    """The model's trainable parameters (`config` or `config:visual`; a config may be a JSON file), with gradients
    drawn from `seed`."""
    import open_clip
    import torch

    name, _, part = model.partition(":")
    if name.endswith(".json"):
        open_clip.add_model_config(name)
        name = Path(name).stem
    torch.manual_seed(seed)
    built = open_clip.create_model(name, device=device)
    module = built.visual if part == "visual" else built
    params = [p for p in module.parameters() if p.requires_grad]
    generator = torch.Generator(device=device).manual_seed(seed + 1)
    for p in params:
        p.grad = torch.randn(p.shape, generator=generator, device=device) * 1e-3
    return params


def one_process(model: str, device: str, rounds: int) -> dict:
    """Median step milliseconds of each optimizer in this process (and the parameter count)."""
    import bitsandbytes as bnb
    import torch

    from transferlab.optim import AdamW8bit

    optimizers = {"transferlab": AdamW8bit(parameters(model, device), **HYPER),
                  "bitsandbytes": bnb.optim.AdamW8bit(parameters(model, device), **HYPER)}
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    for optimizer in optimizers.values():
        for _ in range(2):
            optimizer.step()
    times = {name: [] for name in optimizers}
    for round_ in range(rounds):
        for name in list(optimizers)[:: 1 if round_ % 2 == 0 else -1]:
            sync()
            started = time.perf_counter()
            optimizers[name].step()
            sync()
            times[name].append(time.perf_counter() - started)
    params = sum(p.numel() for group in optimizers["transferlab"].param_groups for p in group["params"])
    return {"params": params, "threads": torch.get_num_threads(),
            **{name: median(values) * 1000 for name, values in times.items()}}


def wait_for_load(below: float | None, limit: float = 900) -> float:
    """Wait (at most `limit` seconds) until the 1-minute load average is below `below`; the load then."""
    waited = 0.0
    while below is not None and os.getloadavg()[0] >= below and waited < limit:
        time.sleep(5)
        waited += 5
    return round(os.getloadavg()[0], 2)


def measure(model: str, device: str, processes: int, rounds: int, threads: int | None = None,
            wait_load: float | None = None) -> dict:
    """The benchmark's row: `processes` fresh processes, their medians combined (0: one run in this process, for a
    quick look: gpu_node.py --tiny); `threads`: their CPU threads (torch's and OpenMP's), default torch's;
    `wait_load`: each process starts once the machine's load average is below it (a shared machine)."""
    runs = [] if processes else [one_process(model, device, rounds)]
    env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    loads = []
    for _ in range(processes):
        loads.append(wait_for_load(wait_load))
        done = subprocess.run([sys.executable, __file__, "--one-process", "--model", model, "--device", device,
                               "--rounds", str(rounds)], capture_output=True, text=True, env=env)
        if done.returncode:
            raise RuntimeError(f"adamw8bit_step worker failed:\n{done.stderr[-3000:]}")
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    row = {"model": Path(model).name, "device": device, "params": runs[0]["params"], "processes": processes,
           "rounds": rounds, "threads": runs[0]["threads"], "load_average_at_starts": loads}
    for name in ("transferlab", "bitsandbytes"):
        values = [run[name] for run in runs]
        row[f"{name}_ms"] = round(median(values), 2)
        row[f"{name}_ms_per_process"] = [round(v, 2) for v in values]
        row[f"{name}_spread"] = round((max(values) - min(values)) / median(values), 3)
    row["time_vs_bitsandbytes"] = round(row["transferlab_ms"] / row["bitsandbytes_ms"], 3)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="ViT-S-32:visual", help="open_clip config, `:visual` for its image tower")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--processes", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads of each process (OMP_NUM_THREADS); "
                        "1 keeps bitsandbytes' OpenMP from spin-waiting on a busy machine")
    parser.add_argument("--wait-load", type=float, default=None, help="start each process once the 1-minute load "
                        "average is below this (at most 15 minutes of waiting each)")
    parser.add_argument("--one-process", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one_process:
        print(json.dumps(one_process(args.model, args.device, args.rounds)))
        return
    row = measure(args.model, args.device, args.processes, args.rounds, args.threads, args.wait_load)
    print(json.dumps({"benchmark": "adamw8bit_step", **row, "load_average_after": round(os.getloadavg()[0], 2)}))


if __name__ == "__main__":
    main()
