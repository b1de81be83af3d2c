"""Deduplication: exact copies by hash, near-duplicates by embedding similarity.

Exact: a pair's hash is a 64-bit BLAKE2b digest of its normalised caption (lower-cased, punctuation
spaced, whitespace collapsed: the form entries are matched in) and its image bytes. Of the pairs with one
hash, the first in pool order (shards in the order given, samples in the order stored) is kept. 64 bits
make a false match between two different pairs unlikely (about n² / 2⁶⁵: 3·10⁻⁸ for a million pairs).

Near: as SemDeDup (Abbas et al., 2023) does, a pair is dropped when an earlier pair in pool order has an
embedding with cosine similarity ≥ the threshold, whether or not that earlier pair was itself dropped.
Images and captions are checked separately. The all-pairs search is faiss's exact range search on an
inner-product index of the normalised embeddings; it costs O(n²·d), so it suits pools up to a few hundred
thousand pairs on a CPU (beyond, cluster first as SemDeDup does, or run it on the balanced set).
"""

from __future__ import annotations

import hashlib

import numpy as np

from transferlab.errors import UserError

QUERY_BLOCK = 4096  # queries per range search, so its result lists stay small


def content_hash(text: str, image: bytes) -> int:
    """The 64-bit hash of a pair for exact deduplication, from its caption normalised case-insensitively
    (`normalise(caption)`) and its image bytes."""
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8)
    digest.update(b"\x00")
    digest.update(image)
    return int.from_bytes(digest.digest(), "little")


def first_occurrences(hashes: np.ndarray) -> np.ndarray:
    """A mask of the pairs whose hash has not occurred earlier in `hashes`."""
    _, first = np.unique(np.asarray(hashes, dtype=np.uint64), return_index=True)
    mask = np.zeros(len(hashes), dtype=bool)
    mask[first] = True
    return mask


def near_duplicates(embeddings: np.ndarray, threshold: float) -> np.ndarray:
    """A mask of the rows that have an earlier row with cosine similarity ≥ `threshold`."""
    try:
        import faiss
    except ImportError:
        raise UserError("Near-duplicate search needs faiss: pip install 'transferlab[faiss]' (or faiss-cpu), or "
                        "leave --near-dup-model out.") from None

    vectors = np.ascontiguousarray(embeddings, dtype=np.float32).copy()
    mask = np.zeros(len(vectors), dtype=bool)
    if len(vectors) < 2:
        return mask
    faiss.normalize_L2(vectors)
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    radius = float(np.nextafter(np.float32(threshold), np.float32(-np.inf)))  # faiss keeps similarity > radius
    for start in range(0, len(vectors), QUERY_BLOCK):
        limits, _, neighbours = index.range_search(vectors[start:start + QUERY_BLOCK], radius)
        query = start + np.repeat(np.arange(len(limits) - 1), np.diff(limits).astype(np.int64))
        mask[query[neighbours < query]] = True
    return mask
