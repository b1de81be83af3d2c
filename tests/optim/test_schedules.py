"""The constant_cooldown schedule (warmup, constant, cooldown to 0) in closed form."""

from __future__ import annotations

import math

import pytest

from transferlab.optim import lr_at


def test_constant_cooldown_linear_at_key_steps():
    # 100 steps, warmup 10, cooldown over the last 20 (steps 80..99), reaching 0 at step 100.
    lr = [lr_at(step, 0.5, 100, 10, "constant_cooldown") for step in range(101)]
    assert lr[:10] == pytest.approx([0.5 * (s + 1) / 10 for s in range(10)])
    assert lr[10:81] == pytest.approx([0.5] * 71)
    assert lr[90] == pytest.approx(0.25)
    assert lr[99] == pytest.approx(0.5 / 20)
    assert lr[100] == pytest.approx(0.0, abs=1e-12)
    assert lr_at(500, 0.5, 100, 10, "constant_cooldown") == pytest.approx(0.0, abs=1e-12)
    assert all(a >= b for a, b in zip(lr[80:], lr[81:], strict=False))


def test_constant_cooldown_fraction_and_sqrt_shape():
    assert lr_at(49, 1.0, 100, 0, "constant_cooldown", cooldown_fraction=0.5) == 1.0
    assert lr_at(75, 1.0, 100, 0, "constant_cooldown", cooldown_fraction=0.5) == pytest.approx(0.5)
    sqrt = lr_at(75, 1.0, 100, 0, "constant_cooldown", cooldown_fraction=0.5, cooldown_shape="1-sqrt")
    assert sqrt == pytest.approx(1 - math.sqrt(0.5))
    assert lr_at(99, 1.0, 100, 0, "constant_cooldown", cooldown_fraction=0.0) == 1.0  # no cooldown


def test_warmup_wins_when_it_overlaps_the_cooldown():
    assert lr_at(4, 1.0, 10, 8, "constant_cooldown", cooldown_fraction=0.5) == pytest.approx(5 / 8)
    assert lr_at(8, 1.0, 10, 8, "constant_cooldown", cooldown_fraction=0.5) == pytest.approx(1 - 3 / 5)


def test_cosine_and_constant_are_unchanged_by_the_cooldown_arguments():
    assert lr_at(60, 0.5, 110, 10, "cosine", cooldown_fraction=0.9) == pytest.approx(0.25)
    assert lr_at(60, 0.5, 110, 10, "constant", cooldown_fraction=0.9) == 0.5


@pytest.mark.parametrize("kwargs", [{"cooldown_fraction": 1.5}, {"cooldown_shape": "cosine"}])
def test_bad_cooldown_settings_raise(kwargs):
    with pytest.raises(ValueError, match="cooldown"):
        lr_at(50, 0.1, 100, 0, "constant_cooldown", **kwargs)
