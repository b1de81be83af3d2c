"""One pass of the encoder per (model, dataset, split), cached on disk.

Image and caption embeddings are stored under `<cache>/<model fingerprint>/<dataset>_<split>[_captions]
.safetensors`, with a fingerprint of the inputs in the file's metadata: re-running a suite, or adding a
task to it, reads the files instead of running the encoder, and any change to the model's weights or
preprocessing (a new model fingerprint) or to the data (a new input fingerprint) is a cache miss.

Under torchrun the ranks share the pass: the items are cut into batches, rank r embeds batches r, r + W,
r + 2W, …, and the embeddings are gathered back into order on every rank (each batch is computed as one
process would compute it, so the features are the same). Rank 0 writes the cache.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm import tqdm

from transferlab import distributed
from transferlab.data.dataset import ImageTextData
from transferlab.data.lazy import LazyImages
from transferlab.data.readers.text_pairs import TextPairData
from transferlab.data.stream.loader import decode_all
from transferlab.fileio import commit, temp_path
from transferlab.models.encoder import Encoder

CPU_BATCH = 256
GPU_BATCH = 1024  # halved on out-of-memory until a batch fits


def auto_batch_size(device: torch.device) -> int:
    return GPU_BATCH if device.type == "cuda" else CPU_BATCH


@torch.no_grad()
def embed_images(encoder: Encoder, images: torch.Tensor | LazyImages, batch_size: int | None = None,
                 desc: str = "embed") -> torch.Tensor:
    """Normalised embeddings [N, D] (float32, CPU) of uint8 images [N, C, H, W], or of streamed images, decoded
    a batch at a time (memory for the features, not the pixels)."""
    encode = encoder.require("image", "Embedding images")

    def pixels(chunk):
        return decode_all(chunk, encoder.image_size, encoder.channels, strict=True,
                          steps=encoder.decode).to(encoder.device)
    return _batched(lambda chunk: encode(encoder.preprocess(pixels(chunk))), images,
                    batch_size or auto_batch_size(encoder.device), desc)


@torch.no_grad()
def embed_texts(encoder: Encoder, texts: list[str], batch_size: int | None = None,
                desc: str = "embed text") -> torch.Tensor:
    encode = encoder.require("text", "Embedding texts")
    return _batched(lambda chunk: encode(list(chunk)), texts, batch_size or auto_batch_size(encoder.device), desc)


def _batched(encode: Callable, items, batch_size: int, desc: str) -> torch.Tensor:
    """Encode `items` in batches (with a progress bar), this rank's share of the batches under torchrun, and
    gather every rank's embeddings in order. On a GPU out-of-memory, a batch is encoded in halves."""
    world = distributed.current()
    blocks = [(start, min(start + batch_size, len(items))) for start in range(0, len(items), batch_size)]
    mine = blocks[world.rank::world.size]
    chunks = []
    with tqdm(total=sum(stop - start for start, stop in mine), desc=desc, unit="item", leave=False,
              disable=len(items) <= batch_size or not world.main) as bar:
        for start, stop in mine:
            chunks.append(_encode_halving(encode, items[start:stop]))
            bar.update(stop - start)
    if world.size == 1:
        return torch.cat(chunks)
    if not chunks:  # fewer batches than ranks: one item tells this rank the embedding's width
        chunks = [_encode_halving(encode, items[:1])[:0]]
    counts = [sum(stop - start for start, stop in blocks[rank::world.size]) for rank in range(world.size)]
    parts = [list(part.split([stop - start for start, stop in blocks[rank::world.size]]))
             for rank, part in enumerate(distributed.gather_rows(torch.cat(chunks), counts))]
    return torch.cat([parts[index % world.size][index // world.size] for index in range(len(blocks))])


def _encode_halving(encode: Callable, items) -> torch.Tensor:
    """encode(items) as float32 on the CPU, in halves (recursively) when the GPU runs out of memory."""
    try:
        return encode(items).float().cpu()
    except torch.cuda.OutOfMemoryError:
        if len(items) == 1:
            raise
        torch.cuda.empty_cache()
        half = len(items) // 2
        return torch.cat([_encode_halving(encode, items[:half]), _encode_halving(encode, items[half:])])


def cached(path: Path | None, inputs_key: str, compute: Callable[[], torch.Tensor]) -> torch.Tensor:
    """`compute()`, read from `path` when it holds the result for `inputs_key`, else stored there."""
    if path is not None and path.is_file():
        with safe_open(str(path), framework="pt") as handle:
            if (handle.metadata() or {}).get("inputs") == inputs_key:
                # cloned into torch's aligned memory, as computed features are: float32 BLAS results depend on
                # alignment, and cached features must give the numbers fresh ones gave
                return handle.get_tensor("embeddings").clone()
    embeddings = compute()
    if path is not None and distributed.current().main:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_path(path)
        save_file({"embeddings": embeddings.contiguous()}, str(tmp), metadata={"inputs": inputs_key})
        commit(tmp, path)
    return embeddings


def image_embeddings(encoder: Encoder, data: ImageTextData, split: str, cache_dir: Path | None,
                     batch_size: int | None = None) -> torch.Tensor:
    key = data.images.fingerprint() if data.streamed else \
        hashlib.sha256(data.images.contiguous().numpy().tobytes()).hexdigest()
    path = _cache_file(cache_dir, encoder, f"{data.name}_{split}")
    return cached(path, key, lambda: embed_images(encoder, data.images, batch_size, f"embed {data.name}/{split}"))


def query_embeddings(encoder: Encoder, data: TextPairData, split: str, cache_dir: Path | None,
                     batch_size: int | None = None) -> torch.Tensor:
    """Embeddings of the left texts of text pairs (what images are to image-text data)."""
    key = hashlib.sha256("\x00".join(data.left).encode()).hexdigest()
    path = _cache_file(cache_dir, encoder, f"{data.name}_{split}_queries")
    encode = encoder.require("query", "Embedding the left texts of text pairs")
    return cached(path, key, lambda: _batched(lambda chunk: encode(list(chunk)), data.left,
                                              batch_size or auto_batch_size(encoder.device), f"embed {data.name}"))


def caption_embeddings(encoder: Encoder, data: ImageTextData | TextPairData, split: str, cache_dir: Path | None,
                       batch_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Embeddings of every caption of `data` (the right texts of pairs), and the index of each one's sample."""
    captions = [[text] for text in data.right] if isinstance(data, TextPairData) else data.captions
    texts = [caption for group in captions for caption in group]
    owner = torch.repeat_interleave(torch.arange(len(data)), torch.tensor([len(c) for c in captions]))
    key = hashlib.sha256("\x00".join(texts).encode()).hexdigest()
    path = _cache_file(cache_dir, encoder, f"{data.name}_{split}_captions")
    return cached(path, key, lambda: embed_texts(encoder, texts, batch_size, f"embed {data.name}/{split} text")), owner


def _cache_file(cache_dir: Path | None, encoder: Encoder, stem: str) -> Path | None:
    return None if cache_dir is None else Path(cache_dir) / encoder.fingerprint[:16] / f"{stem}.safetensors"
