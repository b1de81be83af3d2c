"""Metadata balancing: the MetaCLIP sampling rule (Xu et al., "Demystifying CLIP Data", 2023).

Pass 1 counts, over the whole pool, the pairs each entry matches: c_e. Pass 2 keeps an entry's pairs with
probability p_e = min(1, t / c_e) for a cap t: an entry with at most t pairs keeps them all (the tail is
kept), one with more keeps about t (the head is flattened). A pair matching several entries is offered to
each of them independently and kept when at least one samples it, so it stays with probability
1 - Π_e (1 - p_e); a pair matching no entry is dropped.

Each draw is a uniform made by hashing (seed, shard file name, sample key, entry id), not drawn from a
generator: a pair's fate depends on nothing else but the counts, so it is the same whichever process
decides it, in whatever order, and a shard can be sampled on any machine.
"""

from __future__ import annotations

import numpy as np

MASK64 = (1 << 64) - 1
FNV_OFFSET, FNV_PRIME = 0xCBF29CE484222325, 0x100000001B3
GOLDEN = np.uint64(0x9E3779B97F4A7C15)
MIX1, MIX2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
TO_UNIT = 2.0 ** -53


def mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser: a bijection of uint64 whose outputs look independent for nearby inputs."""
    x = np.array(x, dtype=np.uint64, ndmin=1)  # arrays wrap on overflow silently; numpy scalars warn
    x = (x ^ (x >> np.uint64(30))) * MIX1
    x = (x ^ (x >> np.uint64(27))) * MIX2
    return x ^ (x >> np.uint64(31))


def key_hash(shard_name: str, key: str) -> int:
    """64 bits naming a sample: its shard's file name and its key."""
    return int(key_hashes(shard_name, np.array([key.encode("utf-8", "surrogateescape")]))[0])


def key_state(shard_name: str) -> int:
    """FNV-1a's state after the shard name and a NUL: where every key of the shard continues from."""
    state = FNV_OFFSET
    for byte in shard_name.encode("utf-8", "surrogateescape") + b"\x00":
        state = (state ^ byte) * FNV_PRIME & MASK64
    return state


def key_hashes(shard_name: str, keys: np.ndarray) -> np.ndarray:
    """`key_hash` of each key of one shard (a numpy bytes array, the keys as the tar stores them), as uint64:
    FNV-1a over the shard name, a NUL and the key, then `mix64`; all keys at once, a byte position at a time."""
    state = key_state(shard_name)
    width = keys.dtype.itemsize
    codes = keys.view(np.uint8).reshape(len(keys), width)
    lengths = width - np.argmax(codes[:, ::-1] != 0, axis=1) if width else np.zeros(len(keys), dtype=np.int64)
    lengths[~codes.any(axis=1)] = 0
    hashes = np.full(len(keys), state, dtype=np.uint64)
    for position in range(int(lengths.max(initial=0))):
        stepped = (hashes ^ codes[:, position]) * np.uint64(FNV_PRIME)
        hashes = np.where(lengths > position, stepped, hashes)
    return mix64(hashes)


def uniforms(key_hashes: np.ndarray, entry_ids: np.ndarray, seed: int) -> np.ndarray:
    """One uniform in [0, 1) per (sample, entry) pair, a pure function of the seed, sample and entry."""
    seeded = mix64(np.asarray(key_hashes, dtype=np.uint64) ^ mix64(np.uint64(seed & MASK64)))
    draws = mix64(seeded + (np.asarray(entry_ids, dtype=np.uint64) + np.uint64(1)) * GOLDEN)
    return (draws >> np.uint64(11)).astype(np.float64) * TO_UNIT


def probabilities(counts: np.ndarray, cap: int) -> np.ndarray:
    """p_e = min(1, t / c_e); 1 for an entry nothing matched (it is never asked)."""
    counts = np.asarray(counts, dtype=np.float64)
    return np.minimum(1.0, cap / np.maximum(counts, 1.0))


def balanced_keep(match_ptr: np.ndarray, match_ids: np.ndarray, key_hashes: np.ndarray, counts: np.ndarray,
                  cap: int, seed: int) -> np.ndarray:
    """Which samples stay: sample i matched the entries match_ids[match_ptr[i]:match_ptr[i + 1]]."""
    rows = np.repeat(np.arange(len(key_hashes)), np.diff(match_ptr))
    hit = uniforms(np.asarray(key_hashes)[rows], match_ids, seed) < probabilities(counts, cap)[match_ids]
    return np.bincount(rows[hit], minlength=len(key_hashes)) > 0
