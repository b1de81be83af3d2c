"""transferlab's evaluation against LAION's CLIP_benchmark (`clip_benchmark eval`, clip-benchmark 1.6.2).

Parity: one small open_clip model, trained here for a few hundred steps, is evaluated by both tools on the
very same PNG files with the same templates; zero-shot acc1 / acc5 / mean per-class recall and retrieval
recall@k (both directions) must agree to 0.001, or the script exits with status 1. Speed: one `transferlab
eval` of a suite with zero-shot, retrieval, kNN and few-shot tasks against the `clip_benchmark eval`
invocations a user needs for the same work: one for zeroshot_classification, one for zeroshot_retrieval (its
`--task` takes one task, and `auto` only knows the built-in retrieval datasets), and one linear_probe per shot
count and draw (`--fewshot_k` and `--seed` take one value; its features are cached under `--feature_root`
by the first). CLIP_benchmark has no kNN, so transferlab does strictly more work. Wall clock per process,
start-up included, repeated (alternating which tool goes first); the median ratio CLIP_benchmark /
transferlab is the result, and the ratio with each process's start-up (imports) subtracted is printed beside.

    python benchmarks/peer_clip_benchmark.py          # ~10 minutes on 2 CPU cores; JSON lines on stdout
    python benchmarks/peer_clip_benchmark.py --steps 100 --shots 1 4 --repeats 1     # a quicker look
    python benchmarks/peer_clip_benchmark.py --image-width 33   # non-square PNGs: checks resize/crop rounding

CLIP_benchmark runs in its own virtual environment (default `.venv-peers` beside `.venv`), created on first
use (`--setup-peer-venv` forces it; PEER_SETUP below does it by hand). Every process of both tools runs on
the CPU in float32 (CLIP_benchmark `--no_amp`) with `--threads` (default 1) torch/OpenMP/BLAS threads.

1. data: the 5,000 mnist5k digits (`transferlab.data.readers.bundled`), grey repeated to RGB, written once as 28x28
   PNG files with a CSV (class name, and one DISTINCT descriptive caption per image: stroke weight, width,
   slant, serial number); transferlab reads them as a `table` source with the default seeded, stratified
   70/10/20 split. The same PNG bytes go into CLIP_benchmark's webdataset layout: `cls/` (train and test
   splits = transferlab's train and test splits, .png + .cls; classnames.txt in transferlab's class order;
   zeroshot_classification_templates.txt = the suite's templates with {c}) and `ret/` (the test split,
   .png + .txt, dataset_type.txt = retrieval). Both tools decode with PIL and resize 28 -> 32 bicubically.
2. model: an open_clip ViT (32 px, patch 8, width 128, 3 layers; text width 128, 3 layers, context 24;
   embed 64) registered from a config JSON and trained with `transferlab.losses.clip_loss` on the train
   split (template and descriptive captions), seeded; saved as safetensors. transferlab loads it as
   `openclip:<config.json>:<weights>`; CLIP_benchmark gets the same config file registered in its process
   (benchmarks/_peer_cb_main.py) and `--pretrained <weights>`.
3. each repeat runs both tools in subprocesses, batch size 256, in fresh output and feature-cache directories.
   CLIP_benchmark's linear probe asserts CUDA; `_peer_cb_main.py --cpu-linear-probe` runs its own code on the
   CPU. Few-shot accuracies are printed for information only: the estimators differ (transferlab: L-BFGS
   logistic regression; CLIP_benchmark: AdamW for 10 epochs), and so do the draws.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from statistics import median

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
TOLERANCE = 0.001
MODEL_NAME = "tl-peer-vit-tiny"
TEMPLATES = ["a handwritten digit {}.", "a photo of the number {}."]
RECALL_KS = [1, 5, 10]
PEER_REQUIREMENTS = ["clip-benchmark==1.6.2", "numpy<2.4", "requests", "pandas", "torch==2.14.1",
                     "torchvision==0.29.1", "open_clip_torch==3.3.0"]
PEER_SETUP = ("python3 -m venv .venv-peers && .venv-peers/bin/pip install "
              + " ".join(repr(r) for r in PEER_REQUIREMENTS))
MODEL_CONFIG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 128, "layers": 3, "head_width": 64},
    "text_cfg": {"context_length": 24, "vocab_size": 49408, "width": 128, "heads": 2, "layers": 3},
}
TRANSFERLAB_TASKS = ["zeroshot_classification", "retrieval", "knn", "fewshot"]
# what each tool imports before it does any work: the start-up paid by every invocation
STARTUP_IMPORTS = {
    "transferlab": "import transferlab.cli, transferlab.config, transferlab.evaluate.suite, "
                   "transferlab.models.references, transferlab.models.openclip, open_clip",
    "clip_benchmark": "import clip_benchmark.cli, open_clip, webdataset",
}


def log(message: str) -> None:
    print(f"[peer_clip_benchmark] {message}", file=sys.stderr, flush=True)


def emit(row: dict) -> None:
    print(json.dumps({"benchmark": "peer_clip_benchmark", **row}), flush=True)


# ------------------------------------------------------------------------------------------- peer venv


def ensure_peer_venv(venv: Path, force: bool) -> Path:
    python = venv / "bin" / "python"
    check = [str(python), "-c", "import clip_benchmark.cli, open_clip, webdataset, numpy; "
                                "assert tuple(map(int, numpy.__version__.split('.')[:2])) < (2, 4)"]
    if not force and python.is_file() and subprocess.run(check, capture_output=True).returncode == 0:
        return python
    log(f"setting up the peer environment {venv} (one time; by hand: {PEER_SETUP})")
    if not python.is_file():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", *PEER_REQUIREMENTS], check=True)
    subprocess.run(check, check=True)
    return python


# ------------------------------------------------------------------------------------------------ data


def describe(grey: np.ndarray) -> list[str]:
    """Words for stroke weight, width and slant of each 28x28 digit (tertiles over the collection)."""
    ink = grey.sum(axis=(1, 2))
    columns = grey.max(axis=1) > 0.3
    width = np.array([np.ptp(np.flatnonzero(c)) + 1 if c.any() else 0 for c in columns])
    ys, xs = np.mgrid[0:28, 0:28]
    mass = grey.sum(axis=(1, 2)) + 1e-8
    cx = (grey * xs).sum(axis=(1, 2)) / mass
    cy = (grey * ys).sum(axis=(1, 2)) / mass
    mu11 = (grey * (xs - cx[:, None, None]) * (ys - cy[:, None, None])).sum(axis=(1, 2))
    mu02 = (grey * (ys - cy[:, None, None]) ** 2).sum(axis=(1, 2))
    slant = -mu11 / (mu02 + 1e-8)  # y grows downwards: a right-leaning stroke has x falling as y grows

    def tertile(values: np.ndarray, words: tuple[str, str, str]) -> list[str]:
        low, high = np.quantile(values, [1 / 3, 2 / 3])
        return [words[0] if v < low else words[2] if v > high else words[1] for v in values]

    return [" ".join(parts) for parts in zip(tertile(ink, ("thin", "regular", "thick")),
                                             tertile(width, ("narrow", "medium-width", "wide")),
                                             tertile(slant, ("leaning left", "upright", "leaning right")),
                                             strict=True)]


def write_data(work: Path, image_width: int = 28) -> dict:
    """PNG files and the CSV transferlab reads; returns what the other steps need.

    `image_width` > 28 pads each digit with black columns (centred) to a non-square width x 28 image.
    """
    from PIL import Image

    from transferlab.data.readers.bundled import DIGIT_NAMES, load_bundled

    data = load_bundled("mnist5k", "mnist5k", size=28, channels=3)  # 28 -> 28: the original pixels exactly
    labels = data.labels.numpy()
    grey = data.images[:, 0].numpy().astype(np.float32) / 255
    words = describe(grey)
    folder = work / "mnist"
    (folder / "images").mkdir(parents=True)
    rows, pngs, captions = ["image,label,caption"], [], []
    for i, image in enumerate(data.images.numpy()):
        buffer = io.BytesIO()
        canvas = np.zeros((28, max(image_width, 28), 3), dtype=np.uint8)
        left = (canvas.shape[1] - 28) // 2
        canvas[:, left:left + 28] = image.transpose(1, 2, 0)
        Image.fromarray(canvas).save(buffer, format="PNG")
        pngs.append(buffer.getvalue())
        (folder / "images" / f"{i:05d}.png").write_bytes(pngs[-1])
        name = DIGIT_NAMES[labels[i]]
        # "thin narrow ... leaning left" -> "a thin, narrow handwritten two, leaning left, no. 0042."
        weight, width, *lean = words[i].split(" ")
        captions.append(f"a {weight}, {width} handwritten {name}, {' '.join(lean)}, no. {i:04d}.")
        rows.append(f"images/{i:05d}.png,{name},\"{captions[-1]}\"")
    (folder / "mnist.csv").write_text("\n".join(rows) + "\n")
    assert len(set(captions)) == len(captions), "retrieval captions must be distinct"
    return {"table": folder / "mnist.csv", "pngs": pngs, "captions": captions}


def transferlab_view(table: Path) -> tuple[dict, object, dict]:
    """The suite's dataset spec, the data as transferlab reads it (32 px), and its split indices."""
    from transferlab.config import TableSource
    from transferlab.data.readers.sources import load_dataset
    from transferlab.data.splits import split_indices

    spec = TableSource(source="table", table=table, label_column="label", caption_column="caption")
    data = load_dataset("mnist", spec, MODEL_CONFIG["vision_cfg"]["image_size"], 3)
    return spec, data, split_indices(len(data), spec.splits, data.labels)


def write_tar(path: Path, members: list[tuple[str, bytes]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for name, payload in members:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(payload), 0o644, 0
            tar.addfile(info, io.BytesIO(payload))


def write_split(directory: Path, indices: list[int], payload, shards: int) -> None:
    """CLIP_benchmark's layout: <dir>/nshards.txt and <dir>/{0..n-1}.tar, samples in index order."""
    shards = max(1, min(shards, len(indices)))
    per = math.ceil(len(indices) / shards)
    for shard in range(shards):
        chunk = indices[shard * per:(shard + 1) * per]
        members = [member for n, i in enumerate(chunk, shard * per) for member in payload(f"{n:06d}", i)]
        write_tar(directory / f"{shard}.tar", members)
    (directory / "nshards.txt").write_text(f"{shards}\n")


def write_clip_benchmark_data(work: Path, files: dict, data, splits: dict, shards: int) -> dict:
    labels = data.labels.tolist()
    cls, ret = work / "cb" / "cls", work / "cb" / "ret"
    cls.mkdir(parents=True)
    ret.mkdir(parents=True)
    (cls / "classnames.txt").write_text("".join(f"{name}\n" for name in data.classnames))
    (cls / "zeroshot_classification_templates.txt").write_text(
        "".join(t.replace("{}", "{c}") + "\n" for t in TEMPLATES))

    def classified(key: str, i: int) -> list[tuple[str, bytes]]:
        return [(f"{key}.png", files["pngs"][i]), (f"{key}.cls", str(labels[i]).encode())]

    def captioned(key: str, i: int) -> list[tuple[str, bytes]]:
        return [(f"{key}.png", files["pngs"][i]), (f"{key}.txt", files["captions"][i].encode())]

    write_split(cls / "train", splits["train"].tolist(), classified, shards)
    write_split(cls / "test", splits["test"].tolist(), classified, shards)
    write_split(ret / "test", splits["test"].tolist(), captioned, shards)
    (ret / "dataset_type.txt").write_text("retrieval\n")
    return {"cls": cls, "ret": ret}


# ----------------------------------------------------------------------------------------------- model


def train_model(work: Path, data, train_index: torch.Tensor, steps: int, batch_size: int, seed: int) -> dict:
    """A small open_clip CLIP trained with transferlab's clip_loss; returns the config and weight paths."""
    import open_clip
    from safetensors.torch import save_file

    from transferlab.losses import clip_loss

    config = work / "model" / f"{MODEL_NAME}.json"
    config.parent.mkdir(parents=True)
    config.write_text(json.dumps(MODEL_CONFIG, indent=1))
    open_clip.add_model_config(config)
    torch.manual_seed(seed)
    model = open_clip.create_model(MODEL_NAME, pretrained=None)
    tokenizer = open_clip.get_tokenizer(MODEL_NAME)
    cfg = model.visual.preprocess_cfg
    mean, std = torch.tensor(cfg["mean"]).view(1, 3, 1, 1), torch.tensor(cfg["std"]).view(1, 3, 1, 1)
    images = (data.images[train_index].float() / 255 - mean) / std  # decoded exactly as evaluation decodes
    labels = data.labels[train_index]
    names = data.classnames
    template_texts = [t.format(name) for name in names for t in TEMPLATES]  # class c, template t at c*T + t
    texts = template_texts + [data.captions[i][0] for i in train_index.tolist()]
    tokens = tokenizer(texts)
    n_templates = len(template_texts)

    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0}],
                                  lr=2e-3, betas=(0.9, 0.98), eps=1e-6)
    warmup = max(1, steps // 15)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (
        1 + math.cos(math.pi * min(1.0, max(0, s - warmup) / max(1, steps - warmup)))))
    generator = torch.Generator().manual_seed(seed)
    model.train()
    started = time.perf_counter()
    for step in range(steps):
        batch = torch.randint(len(images), (batch_size,), generator=generator)
        # half the pairs get a class template caption, half the image's own descriptive caption
        use_template = torch.rand(batch_size, generator=generator) < 0.5
        template = torch.randint(len(TEMPLATES), (batch_size,), generator=generator)
        text_index = torch.where(use_template, labels[batch] * len(TEMPLATES) + template, n_templates + batch)
        shift = torch.randint(-2, 3, (2,), generator=generator).tolist()  # a little translation jitter
        x = torch.roll(images[batch], shifts=shift, dims=(2, 3))
        image_emb = F.normalize(model.encode_image(x), dim=-1)
        text_emb = F.normalize(model.encode_text(tokens[text_index]), dim=-1)
        loss = clip_loss(image_emb, text_emb, model.logit_scale.exp(), positive_ids=text_index)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        if step % 50 == 0 or step == steps - 1:
            log(f"train step {step:4d}  loss {loss.item():.3f}  ({time.perf_counter() - started:.0f}s)")
    model.eval()
    weights = work / "model" / f"{MODEL_NAME}.safetensors"
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(weights))
    return {"config": config, "weights": weights, "seconds": time.perf_counter() - started}


# -------------------------------------------------------------------------------------------- the runs


def write_suite(work: Path, spec, args: argparse.Namespace) -> Path:
    import yaml

    suite = {
        "name": "peer-clip-benchmark",
        "datasets": {"mnist": {"source": "table", "table": str(spec.table), "label_column": spec.label_column,
                               "caption_column": spec.caption_column, "splits": spec.splits.model_dump()}},
        "eval": {"datasets": ["mnist"], "split": "test", "tasks": TRANSFERLAB_TASKS,
                 "templates": TEMPLATES, "batch_size": args.batch_size, "retrieval": {"ks": RECALL_KS},
                 "fewshot": {"shots": args.shots, "seeds": args.fewshot_seeds}},
    }
    path = work / "suite.yaml"
    path.write_text(yaml.safe_dump(suite, sort_keys=False))
    return path


def tool_env(threads: int) -> dict:
    """The environment both tools run in: the same thread count for torch, OpenMP and BLAS; no GPU."""
    counts = dict.fromkeys(("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"), str(threads))
    return {**os.environ, **counts, "CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1"}


def timed(command: list[str], log_file: Path, env: dict) -> float:
    """Wall-clock seconds of one subprocess (start-up included); its output goes to `log_file`."""
    started = time.perf_counter()
    with open(log_file, "w") as out:
        done = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=log_file.parent)
    seconds = time.perf_counter() - started
    if done.returncode:
        tail = "".join(log_file.read_text().splitlines(keepends=True)[-30:])
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}); its log {log_file} ends:\n{tail}")
    return seconds


def run_transferlab(out: Path, model: dict, suite: Path, threads: int) -> tuple[dict, float]:
    """`transferlab eval` of the whole suite in one process; its metrics by task, and its wall-clock seconds."""
    # `out` is fresh: the feature cache (<out>/features) starts empty
    command = [str(Path(sys.executable).parent / "transferlab"), "eval",
               f"openclip:{model['config']}:{model['weights']}", "--suite", str(suite), "--out", str(out),
               "--device", "cpu"]
    out.mkdir(parents=True)
    seconds = timed(command, out / "transferlab.log", tool_env(threads))
    results = json.loads((out / "results.json").read_text())
    return {task["task"]: task["metrics"] for task in results["tasks"]}, seconds


def clip_benchmark_runs(peer_python: Path, model: dict, dirs: dict, args: argparse.Namespace,
                        features: Path) -> list[tuple[str, list[str]]]:
    """(name, command) of every `clip_benchmark eval` a user needs: one per task, one per few-shot draw."""
    base = [str(peer_python), str(HERE / "_peer_cb_main.py"), "--openclip-config", str(model["config"])]
    common = ["--model", MODEL_NAME, "--pretrained", str(model["weights"]), "--no_amp", "--batch_size",
              str(args.batch_size), "--num_workers", str(args.workers)]
    runs = [("zeroshot", base + ["eval", "--dataset", "wds/mnist", "--dataset_root", str(dirs["cls"]),
                                 "--task", "zeroshot_classification", *common, "--seed", "0"]),
            ("retrieval", base + ["eval", "--dataset", "wds/mnist_retrieval", "--dataset_root", str(dirs["ret"]),
                                  "--task", "zeroshot_retrieval", "--recall_k", *map(str, RECALL_KS),
                                  *common, "--seed", "0"])]
    for k in args.shots:  # its features are cached under --feature_root by the first of these, as a user would
        for seed in range(args.fewshot_seeds):
            runs.append((f"fewshot_{k}_seed{seed}", base + [
                "--cpu-linear-probe", "eval", "--dataset", "wds/mnist", "--dataset_root", str(dirs["cls"]),
                "--task", "linear_probe", "--train_split", "train", "--fewshot_k", str(k),
                "--feature_root", str(features), *common, "--seed", str(seed)]))
    return runs


def run_clip_benchmark(out: Path, peer_python: Path, model: dict, dirs: dict,
                       args: argparse.Namespace) -> tuple[dict, list[dict]]:
    """Every CLIP_benchmark invocation in turn; metrics by invocation and each one's wall-clock seconds."""
    out.mkdir(parents=True)  # fresh: its feature cache (<out>/features) starts empty
    env = tool_env(args.threads)
    metrics, timings = {}, []
    for name, command in clip_benchmark_runs(peer_python, model, dirs, args, out / "features"):
        result = out / f"{name}.json"
        seconds = timed(command + ["--output", str(result)], out / f"{name}.log", env)
        metrics[name] = json.loads(result.read_text())["metrics"]
        timings.append({"invocation": name, "seconds": round(seconds, 3)})
        log(f"clip_benchmark {name}: {seconds:.1f}s")
    return metrics, timings


def startup_seconds(python: str, imports: str, threads: int, repeats: int = 3) -> float:
    """Fastest of `repeats` fresh interpreters importing what the tool imports before any work."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run([python, "-c", imports], check=True, capture_output=True, env=tool_env(threads))
        times.append(time.perf_counter() - started)
    return min(times)


# --------------------------------------------------------------------------------------------- reports


def report_parity(ours: dict, theirs: dict, tolerance: float = TOLERANCE) -> bool:
    """One line per parity metric and a summary line with both tools' numbers; True when all agree."""
    pairs = {f"zeroshot/{m}": (ours["zeroshot_classification"][m], theirs["zeroshot"][m])
             for m in ("acc1", "acc5", "mean_per_class_recall")}
    pairs.update({f"retrieval/{m}": (ours["retrieval"][m], theirs["retrieval"][m])
                  for m in (f"{kind}_retrieval_recall@{k}" for kind in ("image", "text") for k in RECALL_KS)})
    for name, (mine, peer) in pairs.items():
        case, metric = name.split("/")
        emit({"case": case, "metric": metric, "transferlab": mine, "clip_benchmark": peer,
              "abs_diff": abs(mine - peer), "tolerance": tolerance, "parity": abs(mine - peer) <= tolerance})
    worst = max(abs(mine - peer) for mine, peer in pairs.values())
    emit({"case": "parity", "metric": "max_abs_diff", "value": worst, "tolerance": tolerance,
          "parity": worst <= tolerance, "transferlab": {k: v[0] for k, v in pairs.items()},
          "clip_benchmark": {k: v[1] for k, v in pairs.items()}})
    return worst <= tolerance


def report_other(ours: dict, theirs: dict, args: argparse.Namespace) -> None:
    """Few-shot and kNN numbers: informational (different estimators; CLIP_benchmark has no kNN)."""
    for k in args.shots:
        mine = ours["fewshot"][f"linear_probe@{k}shot"]
        peer = [theirs[f"fewshot_{k}_seed{seed}"]["lp_acc1"] for seed in range(args.fewshot_seeds)]
        emit({"case": "fewshot", "metric": f"linear_probe@{k}shot", "transferlab": mine,
              "clip_benchmark": sum(peer) / len(peer), "seeds": args.fewshot_seeds,
              "note": "transferlab: L-BFGS logistic regression, λ=1e-3; CLIP_benchmark: AdamW, 10 epochs, "
                      "wd 0; different draws: informational, no parity expected"})
    emit({"case": "knn", "metric": "acc1", "transferlab": ours["knn"]["acc1"], "clip_benchmark": None,
          "note": "CLIP_benchmark has no kNN task"})


def report_speed(timings: list[tuple[float, list[dict]]], peer_python: Path, threads: int) -> None:
    """Wall-clock seconds per repeat, start-up per process, and the median ratios over the repeats."""
    ratios, bare_ratios = [], []
    startup = {"transferlab": startup_seconds(sys.executable, STARTUP_IMPORTS["transferlab"], threads),
               "clip_benchmark": startup_seconds(str(peer_python), STARTUP_IMPORTS["clip_benchmark"], threads)}
    for repeat, (ours, invocations) in enumerate(timings):
        theirs = sum(t["seconds"] for t in invocations)
        ratios.append(theirs / ours)
        bare_ratios.append((theirs - len(invocations) * startup["clip_benchmark"]) / (ours - startup["transferlab"]))
        emit({"case": "speed", "metric": "wall_seconds", "repeat": repeat, "transferlab": round(ours, 3),
              "clip_benchmark": round(theirs, 3), "ratio": round(ratios[-1], 2), "threads": threads,
              "transferlab_tasks": TRANSFERLAB_TASKS, "clip_benchmark_invocations": invocations})
    emit({"case": "speed", "metric": "startup_seconds_per_process", "transferlab": round(startup["transferlab"], 3),
          "clip_benchmark": round(startup["clip_benchmark"], 3),
          "processes": {"transferlab": 1, "clip_benchmark": len(timings[0][1])}})
    emit({"case": "speed", "metric": "ratio_clip_benchmark_over_transferlab", "value": round(median(ratios), 2),
          "per_repeat": [round(r, 2) for r in ratios], "target": 3.0})
    emit({"case": "speed", "metric": "ratio_without_startup", "value": round(median(bare_ratios), 2),
          "per_repeat": [round(r, 2) for r in bare_ratios],
          "note": "each process's wall time minus the measured start-up (imports) of its tool"})


# ------------------------------------------------------------------------------------------------ main


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--peer-venv", type=Path, default=ROOT / ".venv-peers")
    parser.add_argument("--setup-peer-venv", action="store_true", help="(re)install the peer environment")
    parser.add_argument("--work", type=Path, help="working directory (default: a fresh temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the working directory")
    parser.add_argument("--steps", type=int, default=300, help="training steps of the small open_clip model")
    parser.add_argument("--train-batch", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=256, help="evaluation batch size (both tools)")
    parser.add_argument("--shots", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--fewshot-seeds", type=int, default=1,
                        help="few-shot draws per shot count (CLIP_benchmark: one invocation each)")
    parser.add_argument("--workers", type=int, default=0, help="CLIP_benchmark's --num_workers")
    parser.add_argument("--threads", type=int, default=1, help="torch/BLAS threads of every process (both tools)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each tool (the median ratio is reported)")
    parser.add_argument("--image-width", type=int, default=28,
                        help="width of the written PNGs (28: square; above 28 the digits are padded, e.g. 33, "
                             "to check non-square resizing and cropping)")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def prepare(work: Path, args: argparse.Namespace) -> tuple[dict, dict, Path]:
    """Data for both tools, the trained model and the transferlab suite."""
    files = write_data(work, args.image_width)
    spec, data, splits = transferlab_view(files["table"])
    dirs = write_clip_benchmark_data(work, files, data, splits, shards=max(1, args.workers))
    log(f"data: {len(data)} images; train {len(splits['train'])}, val {len(splits['val'])}, "
        f"test {len(splits['test'])}")
    model = train_model(work, data, splits["train"], args.steps, args.train_batch, args.seed)
    emit({"case": "setup", "metric": "train_seconds", "value": round(model["seconds"], 1), "steps": args.steps,
          "model": MODEL_CONFIG})
    return model, dirs, write_suite(work, spec, args)


def measure(work: Path, peer_python: Path, model: dict, dirs: dict, suite: Path, args: argparse.Namespace,
            repeat: int) -> tuple[dict, dict, float, list[dict]]:
    """One timed run of each tool (alternating which goes first), each in fresh output and cache directories."""
    def ours():
        return run_transferlab(work / f"repeat{repeat}" / "transferlab", model, suite, args.threads)

    def theirs():
        return run_clip_benchmark(work / f"repeat{repeat}" / "clip_benchmark", peer_python, model, dirs, args)

    if repeat % 2:
        (their_metrics, their_timings), (our_metrics, our_seconds) = theirs(), ours()
    else:
        (our_metrics, our_seconds), (their_metrics, their_timings) = ours(), theirs()
    log(f"repeat {repeat}: transferlab {our_seconds:.1f}s, clip_benchmark "
        f"{sum(t['seconds'] for t in their_timings):.1f}s in {len(their_timings)} invocations")
    return our_metrics, their_metrics, our_seconds, their_timings


def main() -> int:
    args = parse_args()
    torch.set_num_threads(args.threads)
    peer_python = ensure_peer_venv(args.peer_venv.resolve(), args.setup_peer_venv)
    work = (args.work or Path(tempfile.mkdtemp(prefix="peer_clip_benchmark-"))).resolve()
    if work.exists() and any(work.iterdir()):
        raise SystemExit(f"{work} is not empty: give a fresh --work directory")
    work.mkdir(parents=True, exist_ok=True)
    log(f"working directory {work}")
    try:
        model, dirs, suite = prepare(work, args)
        runs = [measure(work, peer_python, model, dirs, suite, args, repeat) for repeat in range(args.repeats)]
        ours, theirs = runs[0][:2]  # the metrics of every repeat are the same; the first one's are reported
        parity = report_parity(ours, theirs)
        report_other(ours, theirs, args)
        report_speed([run[2:] for run in runs], peer_python, args.threads)
    finally:
        if args.keep or args.work:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0 if parity else 1


if __name__ == "__main__":
    sys.exit(main())
