"""The runs behind benchmarks/gpu_node.py's rows: the data and model they share, each tool's pretraining and
zero-shot evaluation, and what a run's log says about its speed."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
CLASSES = 10
TEMPLATES = ["a photo of a {c}.", "a picture of a {c}."]
OPENAI_MEAN, OPENAI_STD = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]
# open_clip_train's log line: samples so far, then the window's mean data and step seconds
OPENCLIP_LINE = re.compile(r"Train Epoch: \d+ \[\s*(\d+)/\d+ .*?Data \(t\): ([0-9.]+) Batch \(t\): ([0-9.]+),")
INSTALL = "pip install -e '.[gpu-bench]'"


@dataclass
class Run:
    """A pretraining run's log windows: the last step of each (1-based), its seconds and seconds waiting for
    data; and the peak device memory (None on a CPU)."""

    ends: list[int]
    seconds: list[float]
    data_seconds: list[float]
    peak_memory_gib: float | None

    def _steady(self, skip: int) -> list[int]:
        starts = [0, *self.ends[:-1]]
        return [i for i, start in enumerate(starts) if start >= skip]

    def samples_per_s(self, batch: int, skip: int) -> float:
        kept = self._steady(skip)
        steps = sum(self.ends[i] - ([0, *self.ends][i]) for i in kept)
        return steps * batch / sum(self.seconds[i] for i in kept)

    def data_share(self, batch: int, skip: int) -> float:
        kept = self._steady(skip)
        return sum(self.data_seconds[i] for i in kept) / sum(self.seconds[i] for i in kept)


def missing(module: str) -> str | None:
    """Why a peer cannot run here, or None."""
    if importlib.util.find_spec(module) is None:
        return f"{module} is not installed ({INSTALL})"
    return None


def device_name(device: str) -> str:
    import torch

    return torch.cuda.get_device_name(device) if device.startswith("cuda") else "cpu"


def model_config_file(work: Path) -> Path:
    return work / "gpu-node-tiny.json"


def openclip_name(work: Path, settings) -> str:
    """What transferlab's towers and open_clip call the model: a stock config, or the tiny one's file."""
    return str(model_config_file(work)) if settings.model == "tiny" else settings.model


def prepare(work: Path, settings, tiny_model: dict) -> None:
    """The tiny model's config file and the synthetic pool: black images at the model's size, listed in a CSV
    (4 batches of distinct files, hard links of one PNG), open_clip's synthetic sample."""
    from PIL import Image

    model_config_file(work).write_text(json.dumps(tiny_model))
    folder = work / "synthetic"
    (folder / "images").mkdir(parents=True)
    Image.new("RGB", (settings.image_size, settings.image_size)).save(folder / "images" / "0.png")
    count = 4 * settings.batch
    for i in range(1, count):
        (folder / "images" / f"{i}.png").hardlink_to(folder / "images" / "0.png")
    (folder / "train.csv").write_text("image,caption\n" + "".join(f"images/{i}.png,Dummy caption\n"
                                                                  for i in range(count)))


def clip_benchmark_layout(root: Path, shards: int) -> None:
    """Make the pool (root/test/{0..n-1}.tar with .jpg, .txt and .cls) a dataset in CLIP_benchmark's layout."""
    (root / "test" / "nshards.txt").write_text(f"{shards}\n")
    (root / "classnames.txt").write_text("".join(f"class{c}\n" for c in range(CLASSES)))
    (root / "zeroshot_classification_templates.txt").write_text("\n".join(TEMPLATES) + "\n")


def _embed_dim(work: Path, settings) -> int:
    import open_clip

    if settings.model == "tiny":
        return json.loads(model_config_file(work).read_text())["embed_dim"]
    return open_clip.get_model_config(settings.model)["embed_dim"]


def transferlab_pretrain(work: Path, settings, device: str, case: str, seed: int, compiled: bool = False) -> Run:
    """transferlab's `pretrain` in this process on the synthetic images (held on the device) or the streamed pool."""
    import torch

    from transferlab.config import load_recipe
    from transferlab.train.loop import pretrain

    s = settings
    tower = {"name": f"openclip:{openclip_name(work, s)}"}
    if case == "synthetic":
        data = {"source": "table", "table": str(work / "synthetic" / "train.csv")}
        augment = {"enabled": False}
    else:  # random resized crops of scale 0.9-1, as open_clip's training preprocessing; no other augmentation
        data = {"source": "webdataset", "shards": str(work / "pool" / "test"), "stream": True}
        augment = {"rotate_degrees": 0, "scale": 0, "translate": 0, "low_res_prob": 0, "crop_scale": [0.9, 1.0]}
    recipe = {
        "name": "gpu-node", "seed": seed, "device": device,
        "datasets": {"bench": {**data, "splits": {"train": 1.0, "val": 0.0, "test": 0.0}}},
        "model": {"image": tower, "text": {**tower, "locked": False}, "embed_dim": _embed_dim(work, s),
                  "image_size": s.image_size, "channels": 3, "mean": OPENAI_MEAN, "std": OPENAI_STD,
                  "init_temperature": 0.07},
        "train": {"data": "bench", "objective": "clip", "steps": s.steps, "batch_size": s.batch, "optimizer": "adamw",
                  "lr": 5e-4, "weight_decay": 0.2, "betas": [0.9, 0.98], "eps": 1e-6, "warmup_steps": s.skip,
                  "schedule": "cosine", "grad_clip": None, "positives": "pair", "augment": augment,
                  "precision": s.precision, "log_every": s.log_every, "checkpoint_every": s.steps,
                  "keep_checkpoints": 1, "loader_workers": s.train_workers, "compile": compiled},
        "eval": {"datasets": ["bench"]},
    }
    path = work / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    run_dir = work / f"transferlab-{case}-{seed}"
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    pretrain(load_recipe(str(path)), run_dir)
    peak = round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    shutil.rmtree(run_dir)
    ends = [line["step"] for line in lines]
    seconds = [(end - start) * s.batch / line["samples_per_s"]
               for start, end, line in zip([0, *ends], ends, lines, strict=False)]
    data = [line.get("data_wait", 0.0) * t for line, t in zip(lines, seconds, strict=True)]
    return Run(ends, seconds, data, peak)


def openclip_pretrain(work: Path, settings, device: str, case: str, seed: int) -> Run:
    """`open_clip_train.main` (a subprocess, through _peer_openclip_main.py) on the same work."""
    s = settings
    logs, peak_file = work / "open_clip-logs", work / "open_clip-peak.json"
    samples = s.steps * s.batch
    if case == "synthetic":
        data = ["--dataset-type", "synthetic", "--train-num-samples", str(samples)]
    else:
        shards = len(list((work / "pool" / "test").glob("*.tar")))
        pattern = str(work / "pool" / "test" / f"{{0..{shards - 1}}}.tar")
        data = ["--dataset-type", "webdataset", "--train-data", pattern, "--train-num-samples", str(samples)]
    tiny = ["--openclip-config", str(model_config_file(work))] if s.model == "tiny" else []
    name = model_config_file(work).stem if s.model == "tiny" else s.model
    command = [sys.executable, str(HERE / "_peer_openclip_main.py"), *tiny, "--peak-memory", str(peak_file),
               "--model", name, *data, "--batch-size", str(s.batch), "--epochs", "1", "--lr", "5e-4", "--wd", "0.2",
               "--beta1", "0.9", "--beta2", "0.98", "--eps", "1e-6", "--warmup", str(s.skip), "--lr-scheduler",
               "cosine", "--precision", f"amp_{s.precision}", "--workers", str(s.train_workers), "--device", device,
               "--save-frequency", "0", "--log-every-n-steps", str(s.log_every), "--seed", str(seed), "--logs",
               str(logs), "--name", "run"]
    done = subprocess.run(command, capture_output=True, text=True, cwd=work)
    log = logs / "run" / "out.log"
    if done.returncode or not log.is_file():
        raise RuntimeError(f"open_clip failed:\n{done.stderr[-3000:]}")
    ends, seconds, data_seconds, previous = [], [], [], 0
    for samples_done, data_time, step_time in OPENCLIP_LINE.findall(log.read_text()):
        end = int(samples_done) // s.batch
        ends.append(end)
        seconds.append((end - previous) * float(step_time))
        data_seconds.append((end - previous) * float(data_time))
        previous = end
    shutil.rmtree(logs)
    if not ends or ends[-1] != s.steps:
        raise RuntimeError(f"open_clip logged steps {ends}, expected up to {s.steps}: see its out.log format")
    return Run(ends, seconds, data_seconds, json.loads(peak_file.read_text())["peak_memory_gib"])


def saved_model(work: Path, settings) -> dict:
    """The random-init model both tools evaluate: its config name or file and its weights (safetensors)."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    weights = work / "model.safetensors"
    if not weights.exists():
        if settings.model == "tiny":
            open_clip.add_model_config(str(model_config_file(work)))
        torch.manual_seed(0)
        model = open_clip.create_model(model_config_file(work).stem if settings.model == "tiny" else settings.model)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    return {"name": openclip_name(work, settings), "weights": weights,
            "open_clip_name": model_config_file(work).stem if settings.model == "tiny" else settings.model}


def transferlab_zeroshot(work: Path, model: dict, root: Path, settings, device: str) -> float:
    """Images/s of transferlab's suite runner doing zero-shot classification of the pool (its test split)."""
    import torch

    from transferlab.config import ClipBenchmarkSource, EvalSpec, Suite
    from transferlab.evaluate.suite import run_suite
    from transferlab.models.references import load_model

    encoder = load_model(f"openclip:{model['name']}:{model['weights']}", torch.device(device)).encoder
    suite = Suite(name="gpu-node", datasets={"pool": ClipBenchmarkSource(source="clip-benchmark", root=str(root))},
                  eval=EvalSpec(datasets=["pool"], tasks=["zeroshot_classification"],
                                templates=[t.replace("{c}", "{}") for t in TEMPLATES], batch_size=settings.eval_batch))
    out = work / "transferlab-eval"
    started = time.perf_counter()
    results = run_suite(encoder, suite, out, cache_dir=None)["results"]
    seconds = time.perf_counter() - started
    shutil.rmtree(out, ignore_errors=True)
    assert results["tasks"][0]["metrics"], results
    return settings.pool_images / seconds


def clip_benchmark_zeroshot(model: dict, root: Path, settings, device: str) -> float:
    """Images/s of clip_benchmark's own zero-shot code path on the same model and files (float32, no amp)."""
    import open_clip
    import torch
    from clip_benchmark.datasets.builder import build_dataset
    from clip_benchmark.metrics.zeroshot_classification import run_classification, zero_shot_classifier
    from clip_benchmark.models import load_clip

    if model["name"].endswith(".json"):
        open_clip.add_model_config(model["name"])
    clip, transform, tokenizer = load_clip(model_type="open_clip", model_name=model["open_clip_name"],
                                           pretrained=str(model["weights"]), cache_dir=None, device=device)
    clip.eval()
    started = time.perf_counter()
    dataset = build_dataset(dataset_name="wds/pool", root=str(root), transform=transform, split="test",
                            download=False, task="zeroshot_classification")
    loader = torch.utils.data.DataLoader(dataset.batched(settings.eval_batch), batch_size=None, shuffle=False,
                                         num_workers=settings.eval_workers)
    classifier = zero_shot_classifier(clip, tokenizer, dataset.classes, dataset.templates, device, amp=False)
    predictions, _ = run_classification(clip, classifier, loader, device, amp=False)
    seconds = time.perf_counter() - started
    assert len(predictions) == settings.pool_images, len(predictions)
    return settings.pool_images / seconds
