"""The keyed permutation that orders epochs and mixture draws without building the order."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from transferlab.data.stream.permutation import Permutation, first_of


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 5000), st.integers(0, 2**64 - 1))
def test_every_order_is_a_bijection_of_the_range(n, key):
    order = Permutation(n, key).take(0, n)
    assert np.array_equal(np.sort(order), np.arange(n))


def test_any_positions_read_the_same_order_as_the_whole():
    order = Permutation(100_003, 9)
    whole = order.take(0, 100_003)
    picks = np.array([99_999, 5, 5, 70_000, 0])
    assert np.array_equal(order[picks], whole[picks])
    assert np.array_equal(order.take(500, 900), whole[500:900])
    with pytest.raises(IndexError):
        order[np.array([100_003])]


def test_orders_are_uniform_over_keys():
    """Where one element lands, and the first element of the order, over 3,000 keys: chi-square against uniform
    (a fixed order, or one that keeps elements near their place, fails it)."""
    n, keys = 12, range(3000)
    orders = np.stack([Permutation(n, key).take(0, n) for key in keys])
    landing = np.bincount(np.flatnonzero(orders == 3) % n, minlength=n)
    first = np.bincount(orders[:, 0], minlength=n)
    for counts in (landing, first):
        assert stats.chisquare(counts).pvalue > 1e-3
    # consecutive elements of one order are not correlated (a sorted or shifted order would be)
    big = Permutation(50_000, 1).take(0, 50_000)
    assert abs(stats.spearmanr(big[:-1], big[1:]).statistic) < 0.03
    assert abs(stats.spearmanr(np.arange(50_000), big).statistic) < 0.03


def test_derived_keys_differ_by_purpose_and_counter():
    a = Permutation.derived(1000, 0, "order", 0).take(0, 1000)
    assert not np.array_equal(a, Permutation.derived(1000, 0, "order", 1).take(0, 1000))
    assert not np.array_equal(a, Permutation.derived(1000, 1, "order", 0).take(0, 1000))
    assert np.array_equal(a, Permutation.derived(1000, 0, "order", 0).take(0, 1000))


def test_first_of_is_distinct_until_the_range_is_used_up():
    drawn = first_of(7, 17, 0, "rows", 3)
    assert sorted(drawn[:7]) == list(range(7)) and sorted(drawn[7:14]) == list(range(7))
    assert len(set(drawn[14:].tolist())) == 3
    assert len(first_of(0, 0, 0, "rows")) == 0
