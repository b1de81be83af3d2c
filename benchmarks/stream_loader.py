"""Streamed loader throughput: transferlab's step loader against the webdataset library's own pipeline as
open_clip builds it, on the same JPEG shards, workers and batch size, side by side in one run.

The pool (benchmarks/_stream_pool.py, written to a temporary folder and deleted at the end) holds `--images`
JPEG image-caption pairs in `--shards` uncompressed tar shards, each image W x H with W, H drawn in
96-512 px. Both loaders deliver normalised float32 batches [batch, 3, 224, 224] of random resized crops
(scale 0.9-1.0, ratio 3/4-4/3, bicubic) mirrored with probability 1/2, CLIP mean/std:

- webdataset (1.0.2): open_clip_train/data.py `get_wds_dataset` rebuilt from webdataset and torchvision calls
  (open_clip_train is not imported): `DataPipeline(SimpleShardList(shards), split_by_node, split_by_worker,
  tarfile_to_samples, select(has image and caption), decode("pilrgb"), rename(image="jpg;png;jpeg;webp",
  text="txt"), map_dict(image=preprocess_train), to_tuple("image", "text"), batched(batch, partial=False))`
  in a `WebLoader(batch_size=None, num_workers=W)`; preprocess_train = RandomResizedCrop(224, (0.9, 1.0),
  bicubic) → RandomHorizontalFlip (for parity: transferlab's crop mirrors) → RGB → ToTensor → Normalize.
  Captions stay strings (open_clip tokenizes them in the worker; transferlab looks captions up in the
  training process), and open_clip's shard and sample shuffle buffers are left out unless `--wds-shuffle`
  (the shuffle costs the webdataset side a little; without it, it reads each shard front to back).
- transferlab: `read_webdataset(..., stream=True)` (the index pass, timed separately and not counted),
  `StepRows(len, batch, seed)` (an epoch's random order), `StepImages` with `CropDraws(seed, (0.9, 1.0),
  (3/4, 4/3), True)` in `stream_steps(workers=W, prefetch=2)`, and in the timed loop the training process's
  `normalize(to_unit(images), mean, std)`, which turns the workers' uint8 pixels into the same normalised
  float batches (that work is on the consumer side here, on the workers' side for webdataset).

`--sampling shards` gives the transferlab side `train.sampling: shards` instead (data/stream/whole_shards.py: whole
shards dealt to the workers, read front to back through a shuffle buffer of `--buffer` samples, no index), and
`--http` serves the pool with `python -m http.server` on 127.0.0.1 (no range requests): both tools then read
URLs, webdataset through its own `curl` pipe, transferlab through fsspec, one request per shard.

Throughput is images/s over one pass (`--images` // batch steps for transferlab, every full batch of every
worker for webdataset), timed from the first batch's arrival (the warm-up batch and worker start-up are
left out). For each worker count the two tools alternate, `--repeats` times (which goes first alternates
too); the median of each and the median of the per-repeat ratios are reported, with images/s per worker.
The load average is recorded before and after: the machine is shared. One JSON line at the end.
`--profile STEPS` also runs cProfile over StepImages.__getitem__ in this process (one torch thread, as in a
worker) for that many steps and prints the top functions by own time (to stderr): where a worker's time goes;
and the same for the webdataset pipeline (num_workers=0) over as many batches.

    python benchmarks/stream_loader.py [--images 6000 --shards 12 --batch-size 64 --workers 1 2 --repeats 3]
    python benchmarks/stream_loader.py --http --sampling shards
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import json
import os
import pstats
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from statistics import median

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _stream_pool import write_pool  # noqa: E402

from transferlab.config import WebDatasetSource  # noqa: E402
from transferlab.data import transforms  # noqa: E402
from transferlab.data.readers.webdataset import read_webdataset  # noqa: E402
from transferlab.data.stream.crops import CropDraws  # noqa: E402
from transferlab.data.stream.loader import StepImages, stream_steps  # noqa: E402
from transferlab.data.stream.order import StepRows  # noqa: E402
from transferlab.data.stream.whole_shards import ShardSteps, open_shard_pool, stream_shard_steps  # noqa: E402

OPENAI_MEAN, OPENAI_STD = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]
SIZE = 224


def _has_image_and_caption(sample: dict) -> bool:  # open_clip's filter_no_caption_or_no_image
    return "txt" in sample and any(ext in sample for ext in ("png", "jpg", "jpeg", "webp"))


def _to_rgb(image):  # open_clip's _convert_to_rgb
    return image.convert("RGB")


def webdataset_loader(shards: list[str], batch: int, workers: int, shuffle: bool, seed: int):
    import webdataset as wds
    from torchvision import transforms as T

    preprocess = T.Compose([T.RandomResizedCrop(SIZE, scale=(0.9, 1.0), interpolation=T.InterpolationMode.BICUBIC),
                            T.RandomHorizontalFlip(), _to_rgb, T.ToTensor(), T.Normalize(OPENAI_MEAN, OPENAI_STD)])
    stages = [wds.SimpleShardList(shards)]
    if shuffle:  # open_clip: detshuffle2(bufsize=2000, initial=500) over shards, shuffle(5000, 1000) over samples
        stages.append(wds.shuffle(2000, initial=500, rng=__import__("random").Random(seed)))
    stages += [wds.split_by_node, wds.split_by_worker, wds.tarfile_to_samples(handler=wds.warn_and_continue)]
    if shuffle:
        stages.append(wds.shuffle(5000, initial=1000))
    stages += [wds.select(_has_image_and_caption), wds.decode("pilrgb", handler=wds.warn_and_continue),
               wds.rename(image="jpg;png;jpeg;webp", text="txt"), wds.map_dict(image=preprocess),
               wds.to_tuple("image", "text"), wds.batched(batch, partial=False)]
    return wds.WebLoader(wds.DataPipeline(*stages), batch_size=None, shuffle=False, num_workers=workers,
                         persistent_workers=False)


def timed(batches) -> tuple[float, int]:
    """(images/s, images) from the first batch's arrival to the last's."""
    count, started = 0, None
    for images in batches:
        if started is None:
            started = time.perf_counter()
            continue
        count += len(images)
    return count / (time.perf_counter() - started), count


def run_webdataset(shards, batch, workers, shuffle, seed):
    return timed(images for images, _texts in webdataset_loader(shards, batch, workers, shuffle, seed))


def transferlab_dataset(data, batch: int, seed: int) -> StepImages:
    crops = CropDraws(seed, (0.9, 1.0), (3 / 4, 4 / 3), True)
    return StepImages(data.images, StepRows(len(data), batch, seed), slice(0, batch), SIZE, 3, crops, seed,
                      skip_bad=True)


def run_transferlab(data, batch, workers, seed):
    dataset = transferlab_dataset(data, batch, seed)

    def batches():
        for loaded in stream_steps(dataset, 0, len(data) // batch, workers, 2, pin_memory=False):
            yield transforms.normalize(transforms.to_unit(loaded.images), OPENAI_MEAN, OPENAI_STD)
    return timed(batches())


def run_transferlab_shards(pattern: str, images: int, batch: int, workers: int, seed: int, buffer: int):
    pool = open_shard_pool(WebDatasetSource(source="webdataset", shards=pattern, splits={"train": 1}), "pool")
    crops = CropDraws(seed, (0.9, 1.0), (3 / 4, 4 / 3), True)
    dataset = ShardSteps(pool, 0, 1, workers, 0, images // batch, batch, SIZE, 3, crops, seed, buffer, 0, {})

    def batches():
        for loaded in stream_shard_steps(dataset, workers, 2, pin_memory=False):
            yield transforms.normalize(transforms.to_unit(loaded.images), OPENAI_MEAN, OPENAI_STD)
    return timed(batches())


@contextlib.contextmanager
def served(folder: Path):
    """`folder` served by `python -m http.server` on 127.0.0.1 (answers no range requests); yields its URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory",
                               str(folder)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(url, timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        yield url
    finally:
        server.terminate()
        server.wait()


def profile_transferlab(data, batch: int, seed: int, steps: int) -> str:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a DataLoader worker (an intra-op pool here would profile spin-waits)
    dataset = transferlab_dataset(data, batch, seed)
    dataset[0]  # opens the shards, draws the epoch's order
    profiler = cProfile.Profile()
    started = time.perf_counter()
    profiler.enable()
    for step in range(1, steps + 1):
        dataset[step]
    profiler.disable()
    seconds = time.perf_counter() - started
    torch.set_num_threads(threads)
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(18)
    return f"in-process StepImages: {steps * batch / seconds:.1f} images/s (profiled)\n{out.getvalue()}"


def profile_webdataset(shards: list[str], batch: int, seed: int, steps: int) -> str:
    """The same for the webdataset pipeline, in this process (num_workers=0), over `steps` batches."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    batches = iter(webdataset_loader(shards, batch, 0, False, seed))
    next(batches)
    profiler = cProfile.Profile()
    started = time.perf_counter()
    profiler.enable()
    for _ in range(steps):
        next(batches)
    profiler.disable()
    seconds = time.perf_counter() - started
    torch.set_num_threads(threads)
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(18)
    return f"in-process webdataset: {steps * batch / seconds:.1f} images/s (profiled)\n{out.getvalue()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=6000)
    parser.add_argument("--shards", type=int, default=12)
    parser.add_argument("--quality", type=int, default=85, help="JPEG quality of the pool")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--wds-shuffle", action="store_true", help="add open_clip's shard and sample shuffles")
    parser.add_argument("--profile", type=int, default=0, metavar="STEPS",
                        help="also cProfile StepImages.__getitem__ in-process over this many steps")
    parser.add_argument("--keep", type=Path, default=None, help="write the pool here and keep it")
    parser.add_argument("--sampling", choices=["epochs", "shards"], default="epochs",
                        help="transferlab's train.sampling: the index and a step's rows, or whole shards")
    parser.add_argument("--buffer", type=int, default=2000, help="--sampling shards: the shuffle buffer")
    parser.add_argument("--http", action="store_true", help="serve the pool with python -m http.server")
    args = parser.parse_args()

    load_before = os.getloadavg()[0]
    folder = args.keep or Path(tempfile.mkdtemp(prefix="tl-bench-loader-", dir="/tmp"))
    try:
        pool = write_pool(folder, args.images, args.shards, quality=args.quality, seed=args.seed)
        with contextlib.ExitStack() as stack:
            url = stack.enter_context(served(folder)) if args.http else None
            shards = [f"{url}/{Path(shard).name}" for shard in pool["shards"]] if url else pool["shards"]
            pattern = f"{url}/shard-{{000000..{len(shards) - 1:06d}}}.tar" if url else str(folder)
            measure(args, pool, shards, pattern, load_before)
    finally:
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)


def measure(args, pool: dict, shards: list[str], pattern: str, load_before: float) -> None:
    """Both loaders alternated over the pool (as paths or URLs); the JSON line printed."""
    data, index_seconds = None, 0.0
    if args.sampling == "epochs":
        started = time.perf_counter()
        data = read_webdataset(WebDatasetSource(source="webdataset", shards=pattern), "pool", SIZE, 3, stream=True)
        index_seconds = time.perf_counter() - started
    print(f"pool: {pool['images']} images, {pool['image_bytes'] / 2**20:.0f} MiB of JPEG, {len(shards)} shards, "
          f"written in {pool['seconds']:.1f}s; indexed in {index_seconds:.1f}s", file=sys.stderr)
    results = {}
    for workers in args.workers:
        tl, wd, ratios = [], [], []
        for repeat in range(args.repeats):
            order = ("transferlab", "webdataset") if repeat % 2 == 0 else ("webdataset", "transferlab")
            got = {}
            for tool in order:
                seed = args.seed + repeat
                if tool == "webdataset":
                    got[tool] = run_webdataset(shards, args.batch_size, workers, args.wds_shuffle, seed)
                elif args.sampling == "shards":
                    got[tool] = run_transferlab_shards(pattern, pool["images"], args.batch_size, workers, seed,
                                                       args.buffer)
                else:
                    got[tool] = run_transferlab(data, args.batch_size, workers, seed)
                print(f"workers {workers} repeat {repeat} {tool}: {got[tool][0]:.1f} images/s "
                      f"({got[tool][1]} images)", file=sys.stderr, flush=True)
            tl.append(got["transferlab"][0])
            wd.append(got["webdataset"][0])
            ratios.append(tl[-1] / wd[-1])
        results[f"workers_{workers}"] = {
            "transferlab_images_per_s": round(median(tl), 1), "webdataset_images_per_s": round(median(wd), 1),
            "transferlab_per_worker": round(median(tl) / workers, 1),
            "webdataset_per_worker": round(median(wd) / workers, 1),
            "ratio_median": round(median(ratios), 3), "ratios": [round(r, 3) for r in ratios],
            "transferlab_runs": [round(v, 1) for v in tl], "webdataset_runs": [round(v, 1) for v in wd]}
    if args.profile and data is not None:
        print(profile_transferlab(data, args.batch_size, args.seed, args.profile), file=sys.stderr)
        print(profile_webdataset(shards, args.batch_size, args.seed, args.profile), file=sys.stderr)
    print(json.dumps({"benchmark": "stream_loader", "images": pool["images"], "shards": len(shards),
                      "jpeg_mib": round(pool["image_bytes"] / 2**20, 1), "batch_size": args.batch_size,
                      "repeats": args.repeats, "wds_shuffle": args.wds_shuffle, "sampling": args.sampling,
                      "http": args.http, "buffer": args.buffer if args.sampling == "shards" else None,
                      "index_seconds": round(index_seconds, 2), **results,
                      "load_average_before": round(load_before, 2),
                      "load_average_after": round(os.getloadavg()[0], 2)}))


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
