"""One data plane alone, in a fresh process (run by benchmarks/stream_scale.py; prints one JSON line):

    python _data_planes.py transferlab PATTERN SAMPLES [--batch 256 --workers 2]   # the webdataset pool itself
    python _data_planes.py mosaicml MDS_DIR SAMPLES [--batch 256 --workers 2]      # MosaicML Streaming's copy
    python _data_planes.py convert POOL_DIR MDS_DIR [--processes 2]                # that copy, by its MDSWriter

A first-batch run times, after `import torch`, the import of the plane's library (`import_seconds`: MosaicML
Streaming imports transformers, seconds on a busy machine) and then, apart, what the issue compares: from opening
the pool to the first batch out of the loader (`first_batch_seconds`: opening or indexing the pool, starting the
loader workers, decoding the batch's 8x8 PNGs; both planes decode, to uint8 [batch, 3, 8, 8]). It reports its
own PSS after the imports, before opening the pool, and the summed PSS of itself and its loader workers at the
first batch; it then holds the loader open for `--hold` seconds so that a watcher sampling the tree sees it
too. `convert` (run with the peer's Python) writes the samples of the pool's shards with `streaming.MDSWriter`
(columns png: bytes, txt: str), the shards split among `--processes` processes each writing a partition, joined
by `streaming.base.util.merge_index` (MosaicML's documented parallel conversion); timed from after the import to
the joined index.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from multiprocessing import get_context
from pathlib import Path

import torch

STARTED = time.perf_counter()  # after `import torch`: the clock of a first-batch run starts here
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _proc_memory import MIB, rss_pss, tree_pss  # noqa: E402
from _tiny_pool import SIDE, read_samples  # noqa: E402


def transferlab_plane():
    """transferlab's streamed loader. This is the one place to adapt when its API changes: it returns
    first_batch(pool, samples, batch, workers) -> (uint8 images [batch, 3, 8, 8], the open loader)."""
    from transferlab.config import WebDatasetSource
    from transferlab.data.readers.webdataset import read_webdataset
    from transferlab.data.stream.loader import StepImages, stream_steps
    from transferlab.data.stream.order import StepRows

    def first_batch(pool: str, samples: int, batch: int, workers: int):
        data = read_webdataset(WebDatasetSource(source="webdataset", shards=pool), "pool", SIDE, 3, stream=True)
        if len(data) != samples:
            raise SystemExit(f"transferlab found {len(data)} samples in {pool}, not {samples}")
        dataset = StepImages(data.images, StepRows(len(data), batch, 0), slice(0, batch), SIDE, 3, None, 0, True)
        batches = stream_steps(dataset, 0, 3, workers=workers, prefetch=2, pin_memory=False)
        return next(batches).images, batches
    return first_batch


def mosaicml_plane():
    """MosaicML Streaming's StreamingDataset (its __getitem__ decodes the PNG) in a torch DataLoader."""
    import numpy as np
    from PIL import Image
    from streaming import StreamingDataset
    from torch.utils.data import DataLoader

    class Decoded(StreamingDataset):
        def __getitem__(self, index: int):
            sample = super().__getitem__(index)
            pixels = np.asarray(Image.open(io.BytesIO(sample["png"])).convert("RGB"))
            return torch.from_numpy(pixels.transpose(2, 0, 1).copy()), sample["txt"]

    def first_batch(pool: str, samples: int, batch: int, workers: int):
        dataset = Decoded(local=pool, shuffle=True, shuffle_seed=0, batch_size=batch)
        if dataset.num_samples != samples:
            raise SystemExit(f"MosaicML Streaming found {dataset.num_samples} samples in {pool}, not {samples}")
        batches = iter(DataLoader(dataset, batch_size=batch, num_workers=workers))
        return next(batches)[0], batches
    return first_batch


def first_batch_run(plane: str, pool: str, samples: int, batch: int, workers: int, hold: float) -> dict:
    first_batch = {"transferlab": transferlab_plane, "mosaicml": mosaicml_plane}[plane]()
    imported = time.perf_counter()
    pss_before = rss_pss(os.getpid())[1]
    images, batches = first_batch(pool, samples, batch, workers)
    first = time.perf_counter()
    pss_at_first = tree_pss(os.getpid())
    if tuple(images.shape) != (batch, 3, SIDE, SIDE) or images.dtype != torch.uint8:
        raise SystemExit(f"{plane}: the first batch is {images.dtype} {tuple(images.shape)}, not uint8 "
                         f"{(batch, 3, SIDE, SIDE)}")
    time.sleep(hold)
    del batches
    return {"plane": plane, "first_batch_seconds": round(first - imported, 3),
            "import_seconds": round(imported - STARTED, 3), "pss_before_open_mib": round(pss_before / MIB, 1),
            "tree_pss_at_first_batch_mib": round(pss_at_first / MIB, 1)}


def _convert_part(job: tuple[list[str], str]) -> int:
    from streaming import MDSWriter

    shards, out = job
    written = 0
    with MDSWriter(out=out, columns={"png": "bytes", "txt": "str"}) as writer:
        for shard in shards:
            for _key, png, caption in read_samples(shard):
                writer.write({"png": png, "txt": caption})
                written += 1
    return written


def convert(pool: Path, out: Path, processes: int) -> dict:
    import streaming  # noqa: F401  (the workers fork with it imported)
    from streaming.base.util import merge_index

    started = time.perf_counter()
    shards = sorted(str(path) for path in pool.glob("shard-*.tar"))
    jobs = [(shards[k::processes], str(out / f"part-{k}")) for k in range(min(processes, len(shards)))]
    with get_context("fork").Pool(len(jobs)) as workers:
        written = sum(workers.map(_convert_part, jobs, chunksize=1))
    merge_index(str(out), keep_local=True)
    stored = sum(path.stat().st_size for path in out.rglob("*") if path.is_file())
    return {"samples": written, "conversion_seconds": round(time.perf_counter() - started, 2), "mds_bytes": stored,
            "processes": len(jobs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["transferlab", "mosaicml", "convert"])
    parser.add_argument("pool", help="the shards' brace pattern (transferlab), MDS folder (mosaicml), pool folder "
                                     "(convert)")
    parser.add_argument("target", help="the number of samples (first-batch runs) or the MDS folder to write")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--hold", type=float, default=0.5, help="seconds the loader stays open after the batch")
    args = parser.parse_args()
    if args.what == "convert":
        result = convert(Path(args.pool), Path(args.target), args.processes)
    else:
        result = first_batch_run(args.what, args.pool, int(args.target), args.batch, args.workers, args.hold)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
