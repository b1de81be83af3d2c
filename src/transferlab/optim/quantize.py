"""Block-wise dynamic 8-bit quantisation (Dettmers et al. 2022, "8-bit Optimizers via Block-wise Quantization").

A tensor is cut into blocks of 256 values (the last block may be shorter). Each block is divided by its
absolute maximum, so it lies in [-1, 1], and every value is replaced by the index of the nearest entry of a
256-value code; the block's absmax is kept in float32. An outlier therefore costs precision only in its own
block.

The code is the dynamic tree of Dettmers (2016, "8-Bit Approximations for Parallelism in Deep Learning"),
read as a byte `s z..z 1 f..f`: sign bit `s`, then `e` zero bits choosing the decade 10^-e, an indicator
bit, and the remaining bits a linear fraction of [0.1, 1] within the decade. Large magnitudes get fine
linear steps (64 per decade near 1) and small ones still exist down to 1e-6 (signed) or 1e-7 (unsigned:
no sign bit, one more decade and twice the steps, for non-negative states such as Adam's second moment).
The fraction grid includes its upper end, so 1.0 is a code value and each block's absmax element
round-trips exactly. The signed code keeps the byte `1 0000000` as a second zero (−0), as a
sign-magnitude code does, rather than invent an asymmetric 256th value.

The nearest code value (ties go up) is found among the midpoints of the sorted code, so the largest
error of a value is half the code spacing around it times its block's absmax: at most 0.45/64 · absmax
for the signed code and 0.45/128 · absmax for the unsigned one. Stochastic rounding (given a generator)
errs by up to a whole spacing but is unbiased, which is what optimizer states that are re-quantised
every step need (see eightbit.py).

torch.bucketize's binary search costs ~50 ns a value on a CPU, 20x an AdamW step, so `_TableSearch` counts
the boundaries at or below each value from a table instead: a float's top 17 bits (sign, exponent and 8
mantissa bits) name a bucket 0.4% wide, narrower than any gap between neighbouring code values or
midpoints, so the table's count at the bucket's lowest float plus one comparison with the next boundary
is exact. A code too fine for that falls back to searchsorted.
"""

from __future__ import annotations

import functools
import weakref

import torch

BLOCK = 256
_SHIFT = 15  # keep 32 - 15 = 17 bits of a float32: sign, 8 exponent bits, 8 mantissa bits
_BUCKETS = 1 << (32 - _SHIFT)
_IN_BUCKET = (1 << _SHIFT) - 1


def dynamic_code(signed: bool = True) -> torch.Tensor:
    """The 256 values of the dynamic tree code, sorted ascending, float32."""
    magnitude_bits = 7 if signed else 8
    magnitudes = [0.0]
    for exponent in range(magnitude_bits):  # `exponent` zero bits before the indicator bit
        steps = 2 ** (magnitude_bits - 1 - exponent)  # the bits after the indicator are the fraction
        magnitudes += [10.0 ** -exponent * (0.1 + 0.9 * k / steps) for k in range(1, steps + 1)]
    values = [sign * m + 0.0 for sign in (1.0, -1.0) for m in magnitudes] if signed else magnitudes  # no -0.0
    return torch.tensor(sorted(values), dtype=torch.float64).float()


@functools.cache
def cached_code(signed: bool, device: torch.device) -> torch.Tensor:
    """`dynamic_code(signed)` on `device`, built once per device."""
    return dynamic_code(signed).to(device)


class _TableSearch:
    """`torch.searchsorted(boundaries, x, right=True)` (boundaries <= x) for float32 x, by table lookup.

    x must hold no -0.0 (add 0.0 first): its bits sit with the negative floats, but it equals +0.0, and
    the signed code's two zeros would put two boundaries in its bucket.
    """

    def __init__(self, boundaries: torch.Tensor) -> None:
        self.boundaries = boundaries.contiguous()
        self.next_boundary = torch.cat([self.boundaries, self.boundaries.new_tensor([float("inf")])])
        # Float bits ordered by magnitude: in a bucket of positive floats the lowest has the bucket's bits,
        # in a bucket of negative floats it is the one with all remaining bits set.
        first = torch.arange(_BUCKETS, dtype=torch.int64, device=boundaries.device) << _SHIFT
        negative = first >= 1 << 31
        lowest = torch.where(negative, first | _IN_BUCKET, first)
        highest = torch.where(negative, first, first | _IN_BUCKET)
        highest[first == 1 << 31] |= 1  # the bucket of -0.0 without -0.0 itself
        lowest, highest = (_as_float(bits) for bits in (lowest, highest))
        self.table = torch.searchsorted(self.boundaries, lowest, right=True).to(torch.int32)
        inside = torch.searchsorted(self.boundaries, highest, right=True) - self.table
        finite = torch.isfinite(lowest) & torch.isfinite(highest)
        self.exact = bool((inside[finite] <= 1).all())

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """int32 counts, flat, for contiguous float32 x."""
        flat = x.reshape(-1)
        if not self.exact:
            return torch.searchsorted(self.boundaries, flat, right=True).to(torch.int32)
        bucket = (flat.view(torch.int32) >> _SHIFT) & (_BUCKETS - 1)
        count = self.table.index_select(0, bucket)
        return count.add_(flat >= self.next_boundary.index_select(0, count))


def _as_float(bits: torch.Tensor) -> torch.Tensor:
    """float32 with the given bit patterns (int64 holding unsigned 32-bit values)."""
    return torch.where(bits >= 1 << 31, bits - (1 << 32), bits).to(torch.int32).view(torch.float32)


# (id(code), kind) -> (weak reference to code, search); the reference tells a live code from a reused id.
_SEARCHES: dict[tuple[int, str], tuple[weakref.ref, _TableSearch]] = {}


def _search(code: torch.Tensor, kind: str) -> _TableSearch:
    """The search over the code's midpoints (nearest value) or its values (for stochastic rounding)."""
    key = (id(code), kind)
    cached = _SEARCHES.get(key)
    if cached is None or cached[0]() is not code:
        boundaries = (code[1:] + code[:-1]) / 2 if kind == "midpoints" else code
        cached = _SEARCHES[key] = (weakref.ref(code), _TableSearch(boundaries))
        weakref.finalize(code, _SEARCHES.pop, key, None)
    return cached[1]


@functools.cache
def kernel_codebook(signed: bool) -> tuple[int, ...] | None:
    """Where optim/_native.c finds the CPU code and its two lookup tables (values: stochastic rounding; midpoints:
    nearest): (code, values table, values next boundary, midpoints table, midpoints next boundary) addresses,
    kept alive by the caches; None when a table search would not be exact."""
    code = cached_code(signed, torch.device("cpu"))
    values, midpoints = _search(code, "values"), _search(code, "midpoints")
    if not (values.exact and midpoints.exact):
        return None
    return (code.data_ptr(), values.table.data_ptr(), values.next_boundary.data_ptr(), midpoints.table.data_ptr(),
            midpoints.next_boundary.data_ptr())


def rounding_noise(generator: torch.Generator, count: int, device: torch.device) -> torch.Tensor:
    """`count` random bytes (uint8) for stochastic rounding: 8-bit uniform draws, 8x cheaper than torch.rand."""
    noise = torch.empty(-(-count // 8), dtype=torch.int64, device=device)
    return noise.random_(-(1 << 63), (1 << 63) - 1, generator=generator).view(torch.uint8)[:count]


def quantize_blockwise(x: torch.Tensor, code: torch.Tensor,
                       generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(uint8 codes of x's numel, float32 absmax per block of 256) of x, flattened.

    Values go to the nearest code value, or, given a `generator`, to one of the two code values around
    them with probabilities that make the rounding unbiased (stochastic rounding). A block of zeros gets
    absmax 0 and the code of 0. `code` must be sorted float32 and contain 0 and ±1 (1 for unsigned data).
    """
    flat = x.detach().reshape(-1).float()
    n = flat.numel()
    blocks = -(-n // BLOCK)
    if n % BLOCK:
        flat = torch.nn.functional.pad(flat, (0, blocks * BLOCK - n))
    absmax = flat.view(blocks, BLOCK).abs().amax(dim=1)
    scale = torch.where(absmax > 0, absmax, torch.ones_like(absmax))  # all-zero blocks stay zero
    scaled = (flat.view(blocks, BLOCK) / scale[:, None]).view(-1).add_(0.0)  # -0.0 becomes +0.0
    if generator is None:
        indices = _search(code, "midpoints")(scaled)  # ties between two code values go up
    else:
        # lower <= x < upper are the code values around x. Taking upper with probability
        # (x - lower) / (upper - lower) keeps E[value] = x, so an EMA whose per-step change is below the
        # code spacing still moves on average instead of being rounded back every step. The uniform draw
        # has 8 bits, a bias of at most 1/512 of a spacing.
        lower = _search(code, "values")(scaled).sub_(1).clamp_(0, code.numel() - 2)
        low = code.index_select(0, lower)
        gap = code.index_select(0, lower + 1).sub_(low)
        noise = rounding_noise(generator, scaled.numel(), scaled.device)
        threshold = gap.mul_(noise.float().add_(0.5).div_(256))
        indices = lower.add_(scaled.sub_(low) > threshold)
    return indices.to(torch.uint8)[:n], absmax


def dequantize_blockwise(codes: torch.Tensor, absmax: torch.Tensor, code: torch.Tensor,
                         shape: torch.Size | tuple[int, ...]) -> torch.Tensor:
    """float32 tensor of `shape` from the codes and per-block absmax of `quantize_blockwise`."""
    n = codes.numel()
    values = code.index_select(0, codes.long())
    if n % BLOCK:
        values = torch.nn.functional.pad(values, (0, absmax.numel() * BLOCK - n))
    values.view(-1, BLOCK).mul_(absmax[:, None])
    return values[:n].view(shape)
