"""curate → pretrain → eval on a generated pool of 200,000 image-caption pairs, end to end through the CLI.

The pool: mnist5k's digits, each drawn many times with a seeded random shift and pixel noise (so every PNG
is distinct), long-tailed over the classes (the class at rank k gets a share falling geometrically to
1/`--ratio` of the largest), captioned "<filler words> a handwritten <digit name> <filler words>", written
as webdataset shards (.png, .txt, .cls) with classnames.txt beside them. Then, each step a subprocess and
timed:

1. `transferlab curate POOL --metadata <the ten digit names> --cap C --workers 2`: MetaCLIP balancing;
2. `transferlab run RECIPE`: the default recipe, only its training data replaced by the curated shards,
   streamed (`stream: true`, `label_key: cls`, all of it in the train split); evaluated as usual on
   mnist5k's test split and on digits.

Prints one JSON line: pool and curated sizes, class counts before and after, the seconds of each step, the
run's streaming report and its evaluation. Everything is written to a temporary folder, deleted at the end.

    python benchmarks/curate_then_pretrain.py [--pairs 200000 --ratio 20 --cap 12000 --shards 40]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from transferlab.data.readers.bundled import DIGIT_NAMES, LOADERS

FILLERS = "photo scan image of the a this my old new small big clear blurry picture".split()


def write_pool(folder: Path, pairs: int, ratio: float, shards: int, rng: np.random.Generator) -> list[int]:
    images, labels = LOADERS["mnist5k"]()
    grey = (np.asarray(images)[:, 0] * 255).astype(np.uint8)
    shares = ratio ** -(np.arange(10) / 9)
    order = rng.permutation(10)  # which class is the head is random
    weights = np.empty(10)
    weights[order] = shares
    classes = rng.choice(10, size=pairs, p=weights / weights.sum())
    by_class = [np.flatnonzero(np.asarray(labels) == c) for c in range(10)]
    per_shard = -(-pairs // shards)
    for shard in range(shards):
        with tarfile.open(folder / f"pool-{shard:05d}.tar", "w") as tar:
            for i in range(shard * per_shard, min(pairs, (shard + 1) * per_shard)):
                label = int(classes[i])
                digit = grey[rng.choice(by_class[label])]
                shifted = np.roll(digit, tuple(rng.integers(-2, 3, size=2)), axis=(0, 1)).astype(np.int16)
                noisy = np.clip(shifted + rng.integers(-12, 13, size=digit.shape), 0, 255).astype(np.uint8)
                png = io.BytesIO()
                Image.fromarray(noisy).save(png, format="PNG")
                words = rng.choice(FILLERS, size=rng.integers(1, 6))
                cut = rng.integers(0, len(words) + 1)
                caption = " ".join([*words[:cut], "a handwritten", DIGIT_NAMES[label], *words[cut:]])
                members = (("png", png.getvalue()), ("txt", caption.encode()), ("cls", str(label).encode()))
                for ext, payload in members:
                    info = tarfile.TarInfo(f"{i:08d}.{ext}")
                    info.size = len(payload)
                    tar.addfile(info, io.BytesIO(payload))
    (folder / "classnames.txt").write_text("\n".join(DIGIT_NAMES) + "\n")
    return np.bincount(classes, minlength=10).tolist()


def timed(command: list[str], log: Path) -> float:
    start = time.perf_counter()
    with open(log, "w") as out:
        done = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT,
                              env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed; its log {log} ends:\n{log.read_text()[-3000:]}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=200_000)
    parser.add_argument("--ratio", type=float, default=20.0)
    parser.add_argument("--cap", type=int, default=12_000)
    parser.add_argument("--shards", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    cli = str(Path(sys.executable).parent / "transferlab")
    work = Path(tempfile.mkdtemp(prefix="curate-pretrain-"))
    try:
        (work / "pool").mkdir()
        start = time.perf_counter()
        before = write_pool(work / "pool", args.pairs, args.ratio, args.shards, np.random.default_rng(args.seed))
        generated = time.perf_counter() - start
        (work / "digits.txt").write_text("\n".join(DIGIT_NAMES) + "\n")
        curate_s = timed([cli, "curate", str(work / "pool"), "--out", str(work / "curated"), "--metadata",
                          str(work / "digits.txt"), "--cap", str(args.cap), "--workers", "2"], work / "curate.log")
        record = json.loads((work / "curated" / "curation.json").read_text())
        recipe = work / "recipe.yaml"
        recipe.write_text(f"base: default\nseed: {args.seed}\ndatasets:\n  curated:\n    source: webdataset\n"
                          f"    shards: {work / 'curated'}\n    label_key: cls\n    stream: true\n"
                          f"    splits: {{train: 1.0}}\ntrain:\n  data: curated\n")
        run_s = timed([cli, "run", str(recipe), "--out", str(work / "run")], work / "run.log")
        results = json.loads((work / "run" / "eval" / "results.json").read_text())
        stream = json.loads((work / "run" / "data_report.json").read_text()).get("training_stream")
        after = [0] * 10
        for shard in sorted((work / "curated").glob("*.tar")):
            with tarfile.open(shard) as tar:
                for member in tar:
                    if member.name.endswith(".cls"):
                        after[int(tar.extractfile(member).read())] += 1
        print(json.dumps({
            "benchmark": "curate_then_pretrain", "pairs": args.pairs, "kept": record["kept"], "cap": args.cap,
            "class_counts_pool": before, "class_counts_curated": after,
            "seconds": {"generate_pool": round(generated, 1), "curate": round(curate_s, 1),
                        "pretrain_and_eval": round(run_s, 1)},
            "training_stream": stream,
            "eval": {f"{t['dataset']}/{t['task']}": round(t["metrics"]["acc1"], 4) for t in results["tasks"]}}))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
