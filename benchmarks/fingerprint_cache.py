"""A repeated `transferlab eval` of a 10,000-image suite, with the dataset-fingerprint cache cold (what every
evaluation cost before the cache: the fingerprint read every file) and warm (it reads only files that changed).

The suite is one ImageFolder dataset of 10,000 PNG files (10 classes, 64x64 noise, ~12 KB each) written once;
the model a tiny open_clip ViT at 16 px (seeded random init: the evaluation's work, not its accuracy, is what
is measured), zero-shot on the whole dataset. Each repeat runs, in fresh processes and alternating which goes
first, one eval with the cache folder emptied (`cold`) and one with it kept from a previous eval (`warm`), each
into a fresh --out (no feature cache). Per run: wall time, and the bytes the process read (`rchar` of
/proc/self/io at exit: imports and model included). Also `dataset_fingerprint` alone, cold and warm, in this
process. Prints one JSON line per measurement and a summary line.

    python benchmarks/fingerprint_cache.py [--images 10000] [--repeats 3] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

TINY_CLIP = {"embed_dim": 16, "vision_cfg": {"image_size": 16, "layers": 1, "width": 64, "patch_size": 8},
             "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
CLASSES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
# Runs `transferlab eval` and reports, at exit, how many bytes the process read.
EVAL = ("import atexit, sys\n"
        "atexit.register(lambda: print('RCHAR', open('/proc/self/io').read().split()[1], file=sys.stderr))\n"
        "from transferlab.cli import main\n"
        "sys.argv = ['transferlab', *sys.argv[1:]]\n"
        "main()\n")


def write_suite(folder: Path, images: int) -> Path:
    rng = np.random.default_rng(0)
    data = folder / "data"
    for i in range(images):
        cls = CLASSES[i % len(CLASSES)]
        (data / cls).mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(data / cls / f"{i:05d}.png")
    suite = folder / "suite.yaml"
    suite.write_text(json.dumps({"name": "fingerprint-bench",
                                 "datasets": {"noise": {"source": "imagefolder", "root": str(data)}},
                                 "eval": {"datasets": ["noise"], "tasks": ["zeroshot_classification"],
                                          "templates": ["a photo of a {}."]}}))
    (folder / "tiny-clip.json").write_text(json.dumps(TINY_CLIP))
    return suite


def run_eval(folder: Path, cache: Path, out: Path) -> tuple[float, int]:
    env = {**os.environ, "TRANSFERLAB_CACHE": str(cache), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", EVAL, "eval", f"openclip:{folder / 'tiny-clip.json'}", "--suite",
                           str(folder / "suite.yaml"), "--out", str(out), "--device", "cpu"],
                          env=env, capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - started
    rchar = int(next(line.split()[1] for line in done.stderr.splitlines() if line.startswith("RCHAR")))
    return seconds, rchar


def fingerprint_alone(folder: Path, cache: Path) -> dict:
    import transferlab.data.tar.remote  # noqa: F401  (imported by the first fingerprint: not part of its cost)
    from transferlab.config.schema import ImageFolderSource
    from transferlab.data.fingerprint import dataset_fingerprint

    os.environ["TRANSFERLAB_CACHE"] = str(cache)
    spec = ImageFolderSource(source="imagefolder", root=str(folder / "data"))
    times = {}
    for state in ("cold", "warm"):
        if state == "cold":
            shutil.rmtree(cache, ignore_errors=True)
        before = int(open("/proc/self/io").read().split()[1])
        started = time.perf_counter()
        dataset_fingerprint(spec)
        times[state] = (time.perf_counter() - started, int(open("/proc/self/io").read().split()[1]) - before)
    return {"measure": "dataset_fingerprint", "cold_s": round(times["cold"][0], 3),
            "warm_s": round(times["warm"][0], 3), "cold_read_mb": round(times["cold"][1] / 2**20, 1),
            "warm_read_mb": round(times["warm"][1] / 2**20, 1),
            "cold_over_warm": round(times["cold"][0] / times["warm"][0], 1)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--keep", type=Path, default=None, help="write the data here and keep it")
    args = parser.parse_args()
    folder = args.keep or Path(tempfile.mkdtemp(prefix="fingerprint-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        if not (folder / "suite.yaml").is_file():
            write_suite(folder, args.images)
        data_mb = sum(p.stat().st_size for p in (folder / "data").rglob("*.png")) / 2**20
        print(json.dumps({"images": args.images, "data_mb": round(data_mb, 1)}), flush=True)
        print(json.dumps(fingerprint_alone(folder, folder / "cache-alone")), flush=True)
        warm_cache = folder / "cache-warm"
        run_eval(folder, warm_cache, folder / "out-prime")  # fills the warm cache
        rows = {"cold": [], "warm": []}
        for repeat in range(args.repeats):
            for state in (("cold", "warm") if repeat % 2 == 0 else ("warm", "cold")):
                cache = folder / "cache-cold" if state == "cold" else warm_cache
                if state == "cold":
                    shutil.rmtree(cache, ignore_errors=True)
                out = folder / f"out-{state}-{repeat}"
                seconds, rchar = run_eval(folder, cache, out)
                shutil.rmtree(out)
                rows[state].append((seconds, rchar))
                print(json.dumps({"measure": "eval", "cache": state, "repeat": repeat, "seconds": round(seconds, 2),
                                  "read_mb": round(rchar / 2**20, 1)}), flush=True)
        cold = statistics.median(s for s, _ in rows["cold"])
        warm = statistics.median(s for s, _ in rows["warm"])
        print(json.dumps({"measure": "eval summary", "cold_median_s": round(cold, 2), "warm_median_s": round(warm, 2),
                          "cold_over_warm": round(cold / warm, 3),
                          "per_repeat": [round(c[0] / w[0], 3) for c, w in zip(rows["cold"], rows["warm"],
                                                                                  strict=True)],
                          "cold_read_mb": round(statistics.median(r for _, r in rows["cold"]) / 2**20, 1),
                          "warm_read_mb": round(statistics.median(r for _, r in rows["warm"]) / 2**20, 1)}),
              flush=True)
    finally:
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
