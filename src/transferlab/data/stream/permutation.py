"""A seeded permutation of range(n) read at any positions without being built: O(1) memory, O(k) time for k
positions, whatever n is.

`torch.randperm(n)` holds n int64s in every process that needs the order — 800 MB per process for a pool of
10^8 samples, and as long again to draw at each epoch. A step needs only its batch's slice of the order, so
the order is a keyed bijection instead: a balanced Feistel network over the smallest power of four at least
n (six rounds, each mixing one half with SplitMix64's finaliser under a round key), walked until the value
falls inside range(n) ("cycle walking": the domain is under 4n, so fewer than four walks are expected, and
the result is again a bijection of range(n)). The same (n, key) always gives the same order; another key,
another order.
"""

from __future__ import annotations

import numpy as np

from transferlab.runtime import derived_seed

ROUNDS = 6
_GOLDEN = 0x9E3779B97F4A7C15


def _mix(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser, elementwise on uint64 (multiplications wrap, as intended)."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


class Permutation:
    """`perm[positions]`: where the order keyed by `key` puts each of `positions` (ints in range(n))."""

    def __init__(self, n: int, key: int) -> None:
        if n < 0:
            raise ValueError(f"a permutation of {n} elements")
        self.n = n
        self.half = max(1, ((n - 1).bit_length() + 1) // 2)  # each half holds this many bits
        self.mask = np.uint64((1 << self.half) - 1)
        start = np.uint64(key & (2**64 - 1))
        steps = np.arange(1, ROUNDS + 1, dtype=np.uint64) * np.uint64(_GOLDEN)
        self.keys = _mix(start + steps).tolist()

    @classmethod
    def derived(cls, n: int, seed: int, purpose: str, *counters: int) -> Permutation:
        """The permutation of range(n) for (seed, purpose, counters), as runtime's derived generators are."""
        return cls(n, derived_seed(seed, purpose, *counters))

    def __getitem__(self, positions) -> np.ndarray:
        index = np.asarray(positions, dtype=np.int64)
        if index.size and (index.min() < 0 or index.max() >= self.n):
            raise IndexError(f"positions outside range({self.n})")
        out = self._round_trip(index.astype(np.uint64).ravel())
        outside = np.flatnonzero(out >= self.n)
        while len(outside):  # cycle walking: apply the bijection again until inside range(n)
            out[outside] = self._round_trip(out[outside])
            outside = outside[out[outside] >= self.n]
        return out.astype(np.int64).reshape(index.shape)

    def take(self, start: int, stop: int) -> np.ndarray:
        """The order's elements start .. stop - 1 (a batch's slice of an epoch's order)."""
        return self[np.arange(start, stop, dtype=np.int64)]

    def _round_trip(self, x: np.ndarray) -> np.ndarray:
        shift = np.uint64(self.half)
        left, right = x >> shift, x & self.mask
        for key in self.keys:
            left, right = right, left ^ (_mix(right ^ np.uint64(key)) & self.mask)
        return (left << shift) | right


def first_of(n: int, count: int, seed: int, purpose: str, *counters: int) -> np.ndarray:
    """`count` positions of range(n) drawn without replacement while they last: the first elements of whole
    seeded permutations, a fresh one (counter appended) each n elements."""
    if count and not n:
        raise ValueError("draws from an empty range")
    drawn = np.arange(count, dtype=np.int64)
    out = np.empty(count, dtype=np.int64)
    for block in range(-(-count // n) if n else 0):
        part = slice(block * n, min(count, (block + 1) * n))
        out[part] = Permutation.derived(n, seed, purpose, *counters, block)[drawn[part] - block * n]
    return out
