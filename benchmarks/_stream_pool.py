"""Synthetic image-caption pools as webdataset shards, for the streaming benchmarks (stream_loader.py,
stream_memory.py): `<key>.jpg` + `<key>.txt` per sample, uncompressed tar, written by several processes.

Each image is W x H pixels, W and H drawn independently in [min_side, max_side]: a random 16 x 16 colour
grid plus a diagonal gradient, upsampled bilinearly (smooth content, so JPEG sizes are those of pictures
rather than of noise, and generating is cheap: about 1 ms an image); its caption is a few words and the
sample's number, distinct per sample. Everything is drawn from (seed, shard): the same arguments give the
same shards.
"""

from __future__ import annotations

import io
import tarfile
import time
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from PIL import Image

RAMP = (np.add.outer(np.arange(16), np.arange(16)) * 2 - 30)[..., None]
WORDS = ("red blue green small large old new dog cat tree house car road sky beach city street photo "
         "picture view close up of the a with on in near under over river mountain boat bird flower").split()


def _write_shard(args: tuple) -> tuple[int, int]:
    path, first, count, min_side, max_side, quality, seed, classes = args
    rng = np.random.default_rng([seed, first])
    written = 0
    with tarfile.open(path, "w") as tar:
        for i in range(first, first + count):
            w, h = (int(v) for v in rng.integers(min_side, max_side + 1, size=2))
            grid = rng.integers(0, 256, size=(16, 16, 3)) + RAMP  # the gradient is added before upsampling: cheap
            img = Image.fromarray(np.clip(grid, 0, 255).astype(np.uint8)).resize((w, h), Image.Resampling.BILINEAR)
            buffer = io.BytesIO()
            img.save(buffer, format="JPEG", quality=quality)
            caption = " ".join(WORDS[j] for j in rng.integers(0, len(WORDS), size=6)) + f" {i}"
            members = [("jpg", buffer.getvalue()), ("txt", caption.encode())]
            if classes:  # a class label, as CLIP_benchmark's classification layout stores it
                members.append(("cls", str(i % classes).encode()))
            for ext, payload in members:
                info = tarfile.TarInfo(f"{i:09d}.{ext}")
                info.size, info.mode, info.mtime = len(payload), 0o644, 0
                tar.addfile(info, io.BytesIO(payload))
            written += len(buffer.getvalue())
    return count, written


def write_pool(folder: Path, images: int, shards: int, min_side: int = 96, max_side: int = 512,
               quality: int = 85, processes: int = 2, seed: int = 0, name: str = "shard-{:06d}.tar",
               classes: int = 0) -> dict:
    """Shards folder/shard-000000.tar ... (`name` formats a shard's number); with `classes`, sample i also has
    `<key>.cls` = i mod classes. Returns {"shards": [...], "images", "image_bytes", "seconds"}."""
    folder.mkdir(parents=True, exist_ok=True)
    per = -(-images // shards)
    jobs = [(str(folder / name.format(s)), s * per, min(per, images - s * per), min_side, max_side,
             quality, seed, classes) for s in range(shards) if s * per < images]
    started = time.perf_counter()
    with get_context("fork").Pool(processes) as pool:
        done = pool.map(_write_shard, jobs, chunksize=1)
    return {"shards": [job[0] for job in jobs], "images": sum(d[0] for d in done),
            "image_bytes": sum(d[1] for d in done), "seconds": time.perf_counter() - started}
