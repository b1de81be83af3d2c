"""Caption rules and the top-fraction score filter."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.curate.pools import kept_keys, write_shard
from transferlab.curate import CaptionFilter, Settings, curate
from transferlab.curate.filters import top_fraction
from transferlab.errors import UserError


@pytest.mark.parametrize(("rules", "caption", "reason"), [
    ({"min_words": 3}, "two words", "caption too short"),
    ({"min_words": 2}, "two words", None),
    ({"min_chars": 10}, "short one", "caption too short"),
    ({"max_words": 3}, "one two three four", "caption too long"),
    ({"max_chars": 5}, "sixsix", "caption too long"),
    ({"max_chars": 6}, "sixsix", None),
    ({"min_letter_fraction": 0.55}, "IMG_2301.JPG", "too few letters"),  # 6 letters of 12
    ({"min_letter_fraction": 0.55}, "IMG_23.JPG", None),  # 6 of 10
    ({"min_letter_fraction": 0.5}, "IMG_2301.JPG", None),  # exactly the fraction passes
    ({"min_letter_fraction": 0.7}, "a b 1", "too few letters"),  # spaces do not count: 2 of 3
    ({}, "a cat\x00", "non-printable characters"),
    ({}, "colour \x1b[31mred", "non-printable characters"),
    ({}, "private \ue000 use", "non-printable characters"),
    ({}, "broken \ufffd text", "non-printable characters"),
    ({"allow_nonprintable": True}, "a cat\x00", None),
    ({}, "tab\tand\nline, non\u00a0breaking, emoji 👩\u200d👩\u200d👧, Ελληνικά, 日本語", None),
])
def test_caption_rules(rules, caption, reason):
    assert CaptionFilter(**rules).reason(caption) == reason


@pytest.mark.parametrize("rules", [{"min_words": -1}, {"min_words": 5, "max_words": 4}, {"max_chars": 0},
                                   {"min_letter_fraction": 1.5}])
def test_impossible_rules_are_refused(rules):
    with pytest.raises(UserError):
        CaptionFilter(**rules)


@given(scores=st.lists(st.integers(-5, 5).map(float), max_size=40),
       keep=st.floats(0.01, 1.0, allow_nan=False))
def test_top_fraction_against_sorting(scores, keep):
    mask = top_fraction(np.array(scores), keep)
    count = math.ceil(round(keep * len(scores), 9))
    ranked = sorted(range(len(scores)), key=lambda i: (-scores[i], i))  # highest first, earlier first on ties
    assert sorted(np.flatnonzero(mask).tolist()) == sorted(ranked[:count])


def test_top_fraction_keeps_exactly_the_fraction():
    assert top_fraction(np.arange(10.0), 0.3).tolist() == [False] * 7 + [True] * 3
    with pytest.raises(UserError):
        top_fraction(np.arange(3.0), 0.0)


def test_caption_filters_in_a_curation(tmp_path):
    samples = [{"__key__": "ok", "txt": "a dog on a beach"},
               {"__key__": "short", "txt": "dog"},
               {"__key__": "long", "txt": "dog " * 40},
               {"__key__": "symbols", "txt": "#### 1234 %%%%"},
               {"__key__": "control", "txt": "a dog\x07 barking"},
               {"__key__": "blank", "txt": "   "},
               {"__key__": "latin1", "txt": "caf\xe9".encode("latin-1")},
               {"__key__": "nocaption", "jpg": b"\xff\xd8"}]
    shard = write_shard(tmp_path / "pool" / "s.tar", samples)
    rules = CaptionFilter(min_words=2, max_words=30, min_letter_fraction=0.5)
    record = curate([shard], tmp_path / "out", Settings(filters=rules))
    assert kept_keys(tmp_path / "out") == {"ok"}
    assert record["removed"] == {"missing caption": 1, "empty caption": 1, "invalid caption": 1,
                                 "caption too short": 1, "caption too long": 1, "too few letters": 1,
                                 "non-printable characters": 1}
    assert record["removed_by_step"] == {"caption": 3, "caption filter": 4}
