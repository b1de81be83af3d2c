"""Block-wise dynamic 8-bit quantisation: the code, round-trip error bounds, zeros, block independence."""

from __future__ import annotations

import pytest
import torch

from transferlab.optim.quantize import BLOCK, dequantize_blockwise, dynamic_code, quantize_blockwise

SIGNED, UNSIGNED = dynamic_code(signed=True), dynamic_code(signed=False)
# Half the widest gap between neighbouring code values: the largest error relative to a block's absmax.
SIGNED_HALF_STEP, UNSIGNED_HALF_STEP = 0.45 / 64, 0.45 / 128


def round_trip(x: torch.Tensor, code: torch.Tensor = SIGNED) -> torch.Tensor:
    codes, absmax = quantize_blockwise(x, code)
    assert codes.dtype == torch.uint8 and codes.shape == (x.numel(),)
    assert absmax.dtype == torch.float32 and absmax.shape == (-(-x.numel() // BLOCK),)
    return dequantize_blockwise(codes, absmax, code, x.shape)


def block_absmax(x: torch.Tensor) -> torch.Tensor:
    """Each element's block absmax, for the per-element error bound."""
    flat = x.reshape(-1)
    blocks = torch.nn.functional.pad(flat, (0, -flat.numel() % BLOCK)).view(-1, BLOCK).abs().amax(1)
    return blocks.repeat_interleave(BLOCK)[:flat.numel()].view(x.shape)


def test_codes_are_sorted_256_values_spanning_the_unit_range():
    for code, low in ((SIGNED, -1.0), (UNSIGNED, 0.0)):
        assert code.shape == (256,) and code.dtype == torch.float32
        assert torch.all(code[1:] >= code[:-1])
        assert code[0] == low and code[-1] == 1.0 and (code == 0).any()
    assert torch.equal(SIGNED, -SIGNED.flip(0))  # symmetric
    assert UNSIGNED.unique().numel() == 256 and SIGNED.unique().numel() == 255  # ±0 share a value
    # Dynamic: a decade below 0.1 as well as steps of ~1% near 1, unlike a linear code (steps of 1/128).
    assert SIGNED[SIGNED > 0].min() == pytest.approx(1e-6) and UNSIGNED[UNSIGNED > 0].min() == pytest.approx(1e-7)
    assert ((SIGNED > 0) & (SIGNED <= 0.01 * (1 + 1e-6))).sum() == 31  # decades 1e-6 .. 1e-2


def test_code_is_deterministic():
    assert torch.equal(dynamic_code(True), dynamic_code(True))


@pytest.mark.parametrize("name", ["normal", "student_t", "tiny", "wide"])
def test_round_trip_error_bounds(name):
    g = torch.Generator().manual_seed(0)
    n = 64 * BLOCK
    x = {"normal": lambda: torch.randn(n, generator=g),
         "student_t": lambda: torch.randn(n, generator=g) / torch.rand(n, generator=g).clamp_min(1e-3),  # t(1)-ish
         "tiny": lambda: 1e-8 * torch.randn(n, generator=g),
         "wide": lambda: torch.randn(n, generator=g) * 10 ** (-6 * torch.rand(n, generator=g))}[name]()
    y = round_trip(x)
    # Per element: never more than half the widest code step times the block's absmax.
    assert torch.all((x - y).abs() <= SIGNED_HALF_STEP * block_absmax(x) * (1 + 1e-5))
    # Elements within a decade of their block's absmax keep a small relative error.
    large = x.abs() >= 0.1 * block_absmax(x)
    assert ((x - y).abs() / x.abs())[large].max() <= 0.0705
    assert ((x - y)[large].norm() / x[large].norm()) < 0.015
    if name in ("normal", "tiny"):
        assert (x - y).norm() / x.norm() < 0.015
    assert torch.equal(torch.sign(y[y != 0]), torch.sign(x[y != 0]))  # no value changes sign


def test_unsigned_code_halves_the_error_for_non_negative_values():
    x = torch.randn(16 * BLOCK, generator=torch.Generator().manual_seed(1)).square()
    y = round_trip(x, UNSIGNED)
    assert torch.all(y >= 0)
    assert torch.all((x - y).abs() <= UNSIGNED_HALF_STEP * block_absmax(x) * (1 + 1e-5))
    assert (x - y).norm() / x.norm() < 0.5 * (x - round_trip(x)).norm() / x.norm()


def test_zeros_and_block_absmax_round_trip_exactly():
    x = torch.randn(5 * BLOCK, generator=torch.Generator().manual_seed(2))
    x[::3] = 0
    x[BLOCK:2 * BLOCK] = 0  # a whole block of zeros: absmax 0, no division by zero
    y = round_trip(x)
    assert torch.all(y[x == 0] == 0) and torch.all(torch.isfinite(y))
    maxima = x.view(5, BLOCK).abs().argmax(1) + torch.arange(5) * BLOCK
    assert torch.equal(y[maxima], x[maxima])


def test_a_huge_value_only_affects_its_own_block():
    x = torch.randn(4 * BLOCK, generator=torch.Generator().manual_seed(3))
    spiked = x.clone()
    spiked[BLOCK + 7] = 1e6
    y, y_spiked = round_trip(x), round_trip(spiked)
    outside = torch.ones_like(x, dtype=torch.bool)
    outside[BLOCK:2 * BLOCK] = False
    assert torch.equal(y[outside], y_spiked[outside])
    assert (y_spiked[BLOCK:2 * BLOCK] != y[BLOCK:2 * BLOCK]).any()  # in its block, small values are crushed


@pytest.mark.parametrize("shape", [(1,), (BLOCK - 1,), (BLOCK + 1,), (3, 100), (7, 13, 11)])
def test_ragged_last_block_and_shapes(shape):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(4))
    y = round_trip(x)
    assert y.shape == x.shape and y.dtype == torch.float32
    assert torch.all((x - y).abs() <= SIGNED_HALF_STEP * block_absmax(x) * (1 + 1e-5))
    _, absmax = quantize_blockwise(x, SIGNED)
    last = x.reshape(-1)[(absmax.numel() - 1) * BLOCK:]
    assert absmax[-1] == last.abs().max()


def test_matches_brute_force_nearest_code_value():
    x = torch.randn(3 * BLOCK + 17, generator=torch.Generator().manual_seed(5)) * 3
    codes, absmax = quantize_blockwise(x, SIGNED)
    scaled = x / block_absmax(x)
    nearest = (scaled[:, None] - SIGNED[None, :]).abs().min(1).values
    chosen = (scaled - SIGNED[codes.long()]).abs()
    assert torch.allclose(chosen, nearest, atol=1e-7)


@pytest.mark.parametrize("signed", [True, False])
def test_table_search_agrees_with_searchsorted_on_edge_values(signed):
    """The lookup table behind quantize_blockwise counts boundaries exactly, at and next to each one."""
    from transferlab.optim.quantize import _search

    code = dynamic_code(signed)
    midpoints = (code[1:] + code[:-1]) / 2
    edges = torch.cat([code, midpoints])
    x = torch.cat([edges, torch.nextafter(edges, torch.tensor(2.0)), torch.nextafter(edges, torch.tensor(-2.0)),
                   torch.tensor([0.0, 1e-45, -1e-45, 1e-40, -1e-40, 1.0, -1.0]),
                   torch.randn(20000, generator=torch.Generator().manual_seed(6)).clamp(-1, 1),
                   10 ** (-9 * torch.rand(20000, generator=torch.Generator().manual_seed(7)))])
    x = x.add(0.0)  # the search's contract: no -0.0
    for kind, boundaries in (("midpoints", midpoints), ("values", code)):
        search = _search(code, kind)
        assert search.exact  # the fast path, not the searchsorted fallback
        assert torch.equal(search(x).long(), torch.searchsorted(boundaries, x, right=True))
