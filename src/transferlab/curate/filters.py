"""Filters: rules on the caption alone, and the model-score filter.

Caption rules are cheap and decided per sample: length in words and characters, the fraction of letters
among the non-space characters (captions of digits, symbols or markup are rarely descriptions), and
non-printable characters: control codes, private-use and unassigned code points, and U+FFFD, the mark a
broken encoding leaves (tabs, line breaks, non-breaking spaces and emoji joiners are fine).

The score filter is the data-filtering-network recipe (Fang et al., 2023; DataComp's CLIP-score
baseline): a model embeds each image and its caption, the pair's score is their cosine similarity, and
the `keep` fraction of pairs with the highest scores stays. It is decided over the whole pool, since the
threshold is a quantile of every score.
"""

from __future__ import annotations

import math
import unicodedata
from dataclasses import dataclass

import numpy as np

from transferlab.errors import UserError

ALLOWED_CONTROLS = frozenset("\t\n\r")
NONPRINTABLE_CATEGORIES = frozenset({"Cc", "Co", "Cn"})  # control, private use, unassigned
REPLACEMENT = "\ufffd"


@dataclass(frozen=True)
class CaptionFilter:
    """Bounds on a caption; None (or 0) leaves a bound off."""

    min_words: int = 0
    max_words: int | None = None
    min_chars: int = 0
    max_chars: int | None = None
    min_letter_fraction: float = 0.0
    allow_nonprintable: bool = False

    def __post_init__(self) -> None:
        for low, high, unit in ((self.min_words, self.max_words, "words"), (self.min_chars, self.max_chars, "chars")):
            if low < 0 or (high is not None and high < max(low, 1)):
                raise UserError(f"Caption length bounds in {unit} must satisfy 0 <= min <= max and max >= 1, got "
                                f"min {low}, max {high}.")
        if not 0.0 <= self.min_letter_fraction <= 1.0:
            raise UserError(f"The minimum fraction of letters must be in [0, 1], got {self.min_letter_fraction}.")

    def reason(self, caption: str) -> str | None:
        """Why `caption` (stripped, non-empty) is filtered out, or None when it passes."""
        length = self._length_reason(caption) if self.bounded else None  # unbounded: skip counting words
        if length:
            return length
        if self.min_letter_fraction > 0:
            visible = [c for c in caption if not c.isspace()]
            if sum(c.isalpha() for c in visible) < self.min_letter_fraction * len(visible):
                return "too few letters"
        if not self.allow_nonprintable and has_nonprintable(caption):
            return "non-printable characters"
        return None

    def reasons(self, captions: list[str]) -> list[str | None]:
        """`reason` of each caption. With only the non-printable rule on (the default), one check of all
        the captions joined by spaces settles the common case of none failing it."""
        if not self.bounded and not self.min_letter_fraction and \
                (self.allow_nonprintable or not has_nonprintable(" ".join(captions))):
            return [None] * len(captions)
        return [self.reason(caption) for caption in captions]

    def _length_reason(self, caption: str) -> str | None:
        words, chars = len(caption.split()), len(caption)
        if words < self.min_words or chars < self.min_chars:
            return "caption too short"
        if (self.max_words is not None and words > self.max_words) or (self.max_chars is not None
                                                                       and chars > self.max_chars):
            return "caption too long"
        return None

    @property
    def bounded(self) -> bool:
        return bool(self.min_words or self.max_words is not None or self.min_chars or self.max_chars is not None)


def has_nonprintable(caption: str) -> bool:
    if REPLACEMENT in caption:
        return True
    if caption.isprintable():  # the common case, checked in C
        return False
    return any(unicodedata.category(c) in NONPRINTABLE_CATEGORIES and c not in ALLOWED_CONTROLS for c in caption)


def top_fraction(scores: np.ndarray, keep: float) -> np.ndarray:
    """A mask of the ceil(keep * n) highest scores; ties go to the earlier pair, so exactly that many stay."""
    if not 0.0 < keep <= 1.0:
        raise UserError(f"The fraction of pairs the score filter keeps must be in (0, 1], got {keep}.")
    count = math.ceil(keep * len(scores) - 1e-9)  # 0.3 * 10 is 3.0000000000000004 in floating point
    order = np.lexsort((np.arange(len(scores)), -np.asarray(scores, dtype=np.float64)))
    mask = np.zeros(len(scores), dtype=bool)
    mask[order[:count]] = True
    return mask
