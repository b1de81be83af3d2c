"""`CaptionColumn`: the captions of a streamed pool's samples, read on demand from one blob of UTF-8 text.

A pool of 10^8 pairs cannot hold its captions as Python lists (some 100 bytes of objects per caption, copied
into every process that touches them). Its index (data/stream/pool_index.py) stores them as fixed-width arrays beside
one text blob, memory-mapped: sample i's captions are captions first[i] .. first[i + 1] - 1, caption j the bytes
text[ends[j - 1]:ends[j]]. A sample stored without captions (label-only data) has its class's template
captions when the dataset gives templates (`filled`, one list per class), as in-memory data does.

It is a sequence of lists of strings, like `ImageTextData.captions` held in memory; `take` makes a subset (a
split) without copying the blob.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class CaptionColumn(Sequence):
    def __init__(self, text: np.ndarray, ends: np.ndarray, first: np.ndarray, labels: np.ndarray | None = None,
                 filled: list[list[str]] | None = None, positions: np.ndarray | None = None,
                 uncaptioned: int = 0) -> None:
        self.text, self.ends, self.first = text, ends, first
        self.labels, self.filled, self.positions = labels, filled, positions
        self.uncaptioned = uncaptioned  # samples of the pool stored without captions

    def __len__(self) -> int:
        return len(self.first) - 1 if self.positions is None else len(self.positions)

    def base(self, rows) -> np.ndarray:
        """The samples of the whole pool that `rows` (positions in this column) are."""
        rows = np.asarray(rows, dtype=np.int64)
        return rows if self.positions is None else self.positions[rows]

    def __getitem__(self, row):
        if isinstance(row, slice):
            return [self[i] for i in range(*row.indices(len(self)))]
        if not -len(self) <= row < len(self):
            raise IndexError(f"caption row {row} of {len(self)}")
        sample = int(self.base(row % len(self)))
        lo, hi = int(self.first[sample]), int(self.first[sample + 1])
        if lo == hi and self.filled is not None:
            return self.filled[int(self.labels[sample])]
        return [self.caption(j) for j in range(lo, hi)]

    def caption(self, j: int) -> str:
        """Stored caption j of the pool."""
        start = int(self.ends[j - 1]) if j else 0
        return self.text[start:int(self.ends[j])].tobytes().decode("utf-8")

    @property
    def stored(self) -> int:
        """Captions stored in the pool's blob (of every sample, not only this column's)."""
        return len(self.ends)

    def take(self, rows) -> CaptionColumn:
        """The captions of `rows`, over the same blob."""
        return CaptionColumn(self.text, self.ends, self.first, self.labels, self.filled,
                             self.base(np.asarray(rows, dtype=np.int64)), self.uncaptioned)

    @classmethod
    def from_lists(cls, captions: Sequence[list[str]]) -> CaptionColumn:
        """A column holding `captions` (lists of strings) in memory."""
        encoded = [text.encode("utf-8") for sample in captions for text in sample]
        counts = np.fromiter((len(sample) for sample in captions), dtype=np.int64, count=len(captions))
        sizes = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
        return cls(np.frombuffer(b"".join(encoded), dtype=np.uint8), np.cumsum(sizes),
                   np.concatenate([[0], np.cumsum(counts)]), uncaptioned=int((counts == 0).sum()))

    @classmethod
    def cat(cls, parts: list[Sequence[list[str]]]) -> Sequence[list[str]]:
        """The captions of `parts` one after the other: a list when all are lists, else a column (whose blob is
        copied: a mixture of streamed pools holds their captions once more)."""
        if all(isinstance(part, list) for part in parts):
            return [captions for part in parts for captions in part]
        columns = [part if isinstance(part, CaptionColumn) else cls.from_lists(part) for part in parts]
        texts, ends, firsts, shift, count, uncaptioned = [], [], [np.zeros(1, dtype=np.int64)], 0, 0, 0
        for column in columns:
            whole = column.materialised()
            texts.append(whole.text)
            ends.append(whole.ends + shift)
            firsts.append(whole.first[1:] + count)
            shift += len(whole.text)
            count += len(whole.ends)
            uncaptioned += whole.uncaptioned
        return cls(np.concatenate(texts), np.concatenate(ends), np.concatenate(firsts), uncaptioned=uncaptioned)

    def materialised(self) -> CaptionColumn:
        """This column as a standalone one in memory: its rows' captions only, templates written out."""
        if self.positions is None and self.filled is None:
            return self
        return CaptionColumn.from_lists([self[i] for i in range(len(self))])
