"""Deduplication: exact copies by hash, near-duplicates by embedding similarity.

Exact: a pair's hash is a 64-bit BLAKE2b digest of its normalised caption (lower-cased, punctuation
spaced, whitespace collapsed: the form entries are matched in) and its image bytes. Of the pairs with one
hash, the first in pool order (shards in the order given, samples in the order stored) is kept. 64 bits
make a false match between two different pairs unlikely (about n² / 2⁶⁵: 3·10⁻⁸ for a million pairs).

Near: as SemDeDup (Abbas et al., 2023) does, a pair is dropped when an earlier pair in pool order has an
embedding with cosine similarity ≥ the threshold, whether or not that earlier pair was itself dropped.
Images and captions are checked separately. Every row's neighbours within the threshold are found by a
faiss range search over an inner-product index of the normalised embeddings; of each pair found, the
later row is dropped. The index depends on the number of rows n:

- up to `EXACT_LIMIT` (100,000) rows, the exact all-pairs search (IndexFlatIP): O(n²·d); on this
  project's 2-core CPU 9 s for 50,000 rows of d = 256, 37 s for 100,000, 184 s for 200,000. Up to
  100,000 it costs well under what embedding that many images costs, so exactness is kept there.
- beyond, an inverted file (IndexIVFFlat) with nlist = 4·√n lists, its k-means trained on a seeded sample
  of 40 rows per list, searched in `NPROBE` lists per query. A pair is missed only when neither row's
  probed lists hold the other (a query and its near-copy almost always fall in the same or a neighbouring
  Voronoi cell), and a pair found is decided as by the exact index: the same test of the float32
  similarity against the threshold (faiss's two kernels may round its last bit differently). On a
  million rows of d = 256 with clusters of near-copies (benchmarks/near_dedup_scale.py), 8 probes found
  all 401,459 duplicate pairs in 248 s (the exact search: about an hour), and 1, 2 and 4 probes found
  0.900, 0.989 and 0.9997 of them; `NPROBE` = 8 doubles the search time over 4 as a margin for
  embeddings less clustered than those. Memory is that of the stored
  vectors (4·d bytes per row, plus 8 for its id), as for the exact index.
  HNSW was not chosen: it answers k nearest neighbours, not a range, so a cluster of more than k copies
  would keep some of them, and its graph costs more memory and build time than the lists.

The threshold comparison is the exact one of float32 similarities: faiss keeps similarities strictly
above its radius, so the radius is the float32 just below the threshold (thresholds above 1 − 2⁻¹⁶ count
as 1 − 2⁻¹⁶, so that at 1.0 equal directions are found despite rounding). The result depends only on the
input and the seed: the training sample and k-means are seeded, and a range search scans each query's
lists whatever the number of threads.

The embeddings can be one array or a re-iterable source of row blocks in pool order (`Blocks`: the plan
stage streams them from the shards' work files), so only the index holds all rows at once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Protocol

import numpy as np

from transferlab.errors import UserError

QUERY_BLOCK = 4096  # queries per range search, so its result lists stay small
EXACT_LIMIT = 100_000  # rows up to which the exact all-pairs search is used
NPROBE = 8  # lists of the inverted file searched per query
TRAIN_PER_LIST = 40  # k-means training rows per list (faiss warns below 39)
KMEANS_ITERATIONS = 10
# a float32 dot product of two equal unit vectors can come out a few units of 2⁻²⁴ below 1 (more for large d),
# so thresholds above this mean "the same direction" and copies are found at a threshold of 1.0
SAME_DIRECTION = np.float32(1 - 2**-16)


def content_hash(text: str, image: bytes) -> int:
    """The 64-bit hash of a pair for exact deduplication, from its caption normalised case-insensitively
    (`normalise(caption)`) and its image bytes."""
    return int(content_hashes([text], [image])[0])


def content_hashes(texts: list[str], images: list[bytes]) -> np.ndarray:
    """`content_hash` of many pairs, as uint64: BLAKE2b-64 of the caption, a NUL and the image bytes."""
    blake2b = hashlib.blake2b
    digests = b"".join([blake2b(text.encode("utf-8") + b"\x00" + image, digest_size=8).digest()
                        for text, image in zip(texts, images, strict=True)])
    return np.frombuffer(digests, dtype="<u8").astype(np.uint64)


def first_occurrences(hashes: np.ndarray) -> np.ndarray:
    """A mask of the pairs whose hash has not occurred earlier in `hashes`."""
    _, first = np.unique(np.asarray(hashes, dtype=np.uint64), return_index=True)
    mask = np.zeros(len(hashes), dtype=bool)
    mask[first] = True
    return mask


class Blocks(Protocol):
    """n rows of d columns, read block by block in order, as often as needed."""

    def __len__(self) -> int: ...

    @property
    def dim(self) -> int: ...

    def blocks(self) -> Iterator[np.ndarray]: ...


class InMemory:
    """An array as `Blocks`."""

    def __init__(self, array: np.ndarray, block: int = 65_536) -> None:
        self.array, self.block = np.asarray(array), block

    def __len__(self) -> int:
        return len(self.array)

    @property
    def dim(self) -> int:
        return self.array.shape[1] if self.array.ndim == 2 else 0

    def blocks(self) -> Iterator[np.ndarray]:
        for start in range(0, len(self.array), self.block):
            yield self.array[start:start + self.block]


def near_duplicates(embeddings: np.ndarray | Blocks, threshold: float, index: str = "auto",
                    exact_limit: int = EXACT_LIMIT, nprobe: int = NPROBE, seed: int = 0) -> np.ndarray:
    """A mask of the rows that have an earlier row with cosine similarity ≥ `threshold`.

    index: "exact", "ivf", or "auto" (exact up to `exact_limit` rows, the inverted file beyond)."""
    mask = np.zeros(len(embeddings), dtype=bool)
    for _, later in near_duplicate_pairs(embeddings, threshold, index, exact_limit, nprobe, seed):
        mask[later] = True
    return mask


def near_duplicate_pairs(embeddings: np.ndarray | Blocks, threshold: float, index: str = "auto",
                         exact_limit: int = EXACT_LIMIT, nprobe: int = NPROBE,
                         seed: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The pairs of rows with cosine similarity ≥ `threshold` found, as arrays (earlier rows, later rows),
    a block of queries at a time; a pair may come twice (found from either row)."""
    try:
        import faiss
    except ImportError:
        raise UserError("Near-duplicate search needs faiss: pip install 'transferlab[faiss]' (or faiss-cpu), or "
                        "leave --near-dup-model out.") from None
    if index not in ("auto", "exact", "ivf"):
        raise ValueError(f"index is auto, exact or ivf, not {index!r}")

    rows = embeddings if hasattr(embeddings, "blocks") else InMemory(embeddings)
    if len(rows) < 2:
        return
    if index == "exact" or (index == "auto" and len(rows) <= exact_limit):
        searcher = faiss.IndexFlatIP(rows.dim)
    else:
        searcher = _trained_ivf(faiss, rows, nprobe, seed)
    for block in rows.blocks():
        searcher.add(_unit(block))
    threshold = min(np.float32(threshold), SAME_DIRECTION)
    radius = float(np.nextafter(threshold, np.float32(-np.inf)))  # faiss keeps similarity > radius
    start = 0
    for block in rows.blocks():
        for offset in range(0, len(block), QUERY_BLOCK):
            queries = _unit(block[offset:offset + QUERY_BLOCK])
            limits, _, neighbours = searcher.range_search(queries, radius)
            query = start + np.repeat(np.arange(len(queries)), np.diff(limits).astype(np.int64))
            other = neighbours != query  # either row of a pair may have found it: the later one is dropped
            yield np.minimum(query[other], neighbours[other]), np.maximum(query[other], neighbours[other])
            start += len(queries)


def _unit(block: np.ndarray) -> np.ndarray:
    import faiss

    vectors = np.array(block, dtype=np.float32, order="C", copy=True)
    faiss.normalize_L2(vectors)
    return vectors


def _trained_ivf(faiss, rows: Blocks, nprobe: int, seed: int):
    """An empty IndexIVFFlat with 4·√n lists (fewer on small inputs, so each list has `TRAIN_PER_LIST`
    training rows), its k-means trained on a seeded sample of the rows."""
    lists = max(1, min(int(4 * np.sqrt(len(rows))), len(rows) // TRAIN_PER_LIST))
    chosen = np.sort(np.random.default_rng(seed).choice(len(rows), min(len(rows), TRAIN_PER_LIST * lists),
                                                        replace=False))
    sample, start = [], 0
    for block in rows.blocks():
        wanted = chosen[(chosen >= start) & (chosen < start + len(block))] - start
        sample.append(_unit(block[wanted]))
        start += len(block)
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(rows.dim), rows.dim, lists, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed, index.cp.niter = seed, KMEANS_ITERATIONS
    index.train(np.concatenate(sample))
    index.nprobe = min(nprobe, lists)
    return index
