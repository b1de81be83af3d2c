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

import hashlib

import numpy as np

MASK64 = (1 << 64) - 1
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
    return int(key_hashes(shard_name, [key.encode("utf-8", "surrogateescape")])[0])


def key_hashes(shard_name: str, keys: list[bytes]) -> np.ndarray:
    """`key_hash` of each key of one shard (as the tar stores it, UTF-8), as uint64."""
    prefix, blake2b = shard_name.encode("utf-8") + b"\x00", hashlib.blake2b
    digests = b"".join([blake2b(prefix + key, digest_size=8).digest() for key in keys])
    return np.frombuffer(digests, dtype="<u8").astype(np.uint64)


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
