"""The caption set of a training set, and the per-step choice of one caption per image.

Two tables give a step the same rows (the same texts, in the same order; `caption_table` picks one):

- `CaptionTable`: captions held in memory, deduplicated into `texts` (many images share captions: templated
  labels, repeated alt-texts); each image keeps the ids of its captions. A locked text tower then embeds
  `texts` once.
- `ColumnCaptionTable`: the captions of a streamed pool larger than MATERIALISE_UP_TO, read from the pool's
  index as batches need them (data/caption_column.py); ids are the pool's stored captions, then the
  templates of each class. Identical texts are recognised by a hash, where `positives: caption` needs it.
- `StepCaptions`: read from whole shards (`train.sampling: shards`), a step's captions arrive with its images;
  the table holds this rank's rows of the current step.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import torch

from transferlab.data.caption_column import CaptionColumn
from transferlab.errors import UserError

MATERIALISE_UP_TO = 200_000  # stored captions of a streamed pool held as a CaptionTable (about 30 MB of strings)


def caption_table(captions: Sequence[list[str]]) -> CaptionTable | ColumnCaptionTable:
    """The table of a training set's captions: read from the pool's index when it stores many, else in memory."""
    if isinstance(captions, CaptionColumn) and captions.stored > MATERIALISE_UP_TO:
        return ColumnCaptionTable(captions)
    return CaptionTable(list(captions))


def _no_caption(missing: int, total: int) -> UserError:
    return UserError(f"{missing} of {total} images have no caption (label-only data), and training pairs each image "
                     f"with a caption. Give the dataset `templates` (e.g. ['a photo of a {{}}.']) to caption images "
                     f"by their class, or train an image-only objective (supcon, simclr, supervised-ce).")


class CaptionTable:
    def __init__(self, captions: list[list[str]]) -> None:
        ids: dict[str, int] = {}
        rows = [[ids.setdefault(c, len(ids)) for c in sample] for sample in captions]
        self.texts: list[str] = list(ids)
        self.counts = torch.tensor([len(r) for r in rows], dtype=torch.long)
        if len(rows) and int(self.counts.min()) == 0:
            raise _no_caption(int((self.counts == 0).sum()), len(rows))
        self.table = torch.zeros(len(rows), int(self.counts.max()) if len(rows) else 0, dtype=torch.long)
        for i, row in enumerate(rows):
            self.table[i, : len(row)] = torch.tensor(row)

    def sample(self, index: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """One caption id per image in `index`, uniformly among that image's captions."""
        counts = self.counts[index]
        choice = (torch.rand(len(index), generator=generator) * counts).long().clamp(max=counts - 1)
        return self.table[index, choice]

    def all_rows(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Every caption of every image in `index`: the image each row belongs to, and the row's caption id."""
        counts = self.counts[index]
        row_image = torch.repeat_interleave(torch.arange(len(index)), counts)
        slot = torch.arange(len(row_image)) - (torch.cumsum(counts, 0) - counts)[row_image]
        return row_image, self.table[index[row_image], slot]

    def first_ids(self, index: torch.Tensor) -> torch.Tensor:
        """An id per image that is equal exactly when their first captions are the same text."""
        return self.table[index, 0]

    def texts_of(self, ids: torch.Tensor) -> list[str]:
        return [self.texts[i] for i in ids.tolist()]

    def every_text(self) -> list[str]:
        """The distinct texts, in id order (what a locked text tower embeds once)."""
        return self.texts


class ColumnCaptionTable:
    def __init__(self, column: CaptionColumn) -> None:
        if column.uncaptioned and column.filled is None:
            raise _no_caption(column.uncaptioned, len(column))
        self.column = column
        self.templates = 0 if column.filled is None else len(column.filled[0])

    def _counts(self, samples: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Where each sample's stored captions start, how many it has (its class's templates when none), and
        whether it has stored captions at all."""
        first = self.column.first
        lo, hi = first[samples], first[samples + 1]
        stored = hi > lo
        counts = np.where(stored, hi - lo, self.templates) if self.templates else hi - lo
        return lo, counts, stored

    def _ids(self, samples: np.ndarray, lo: np.ndarray, stored: np.ndarray, slot: np.ndarray) -> torch.Tensor:
        if not self.templates:
            return torch.from_numpy(lo + slot)
        template = self.column.stored + self.column.labels[samples] * self.templates + slot
        return torch.from_numpy(np.where(stored, lo + slot, template))

    def sample(self, index: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """One caption id per image in `index`, uniformly among that image's captions (as CaptionTable draws)."""
        samples = self.column.base(index.numpy())
        lo, counts, stored = self._counts(samples)
        counts_t = torch.from_numpy(counts)
        choice = (torch.rand(len(index), generator=generator) * counts_t).long().clamp(max=counts_t - 1).numpy()
        return self._ids(samples, lo, stored, choice)

    def all_rows(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        samples = self.column.base(index.numpy())
        lo, counts, stored = self._counts(samples)
        row_image = np.repeat(np.arange(len(samples)), counts)
        slot = np.arange(len(row_image)) - (np.cumsum(counts) - counts)[row_image]
        return torch.from_numpy(row_image), self._ids(samples[row_image], lo[row_image], stored[row_image], slot)

    def first_ids(self, index: torch.Tensor) -> torch.Tensor:
        """A 63-bit hash of each image's first caption: equal texts, equal ids."""
        samples = self.column.base(index.numpy())
        lo, _, stored = self._counts(samples)
        first = self._ids(samples, lo, stored, np.zeros(len(samples), dtype=np.int64))
        return _text_ids(self.texts_of(first))

    def texts_of(self, ids: torch.Tensor) -> list[str]:
        stored, column = self.column.stored, self.column
        return [column.caption(i) if i < stored else column.filled[(i - stored) // self.templates][
            (i - stored) % self.templates] for i in ids.tolist()]

    def every_text(self) -> None:
        """None: too many to embed up front; a locked tower embeds each batch's texts."""
        return None


class StepCaptions:
    """The captions of the current step's rows, held at their places in the global batch (`hold`); draws are made
    for the whole batch, as CaptionTable makes them, and this rank's rows keep theirs."""

    def __init__(self) -> None:
        self.rows, self.table = slice(0, 0), CaptionTable([])

    def hold(self, rows: slice, batch_size: int, captions: list[list[str]]) -> None:
        self.rows, self.batch_size, self.table = rows, batch_size, CaptionTable(captions)

    def _local(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        local = index - self.rows.start
        return local.clamp(0, len(self.table.counts) - 1), (local >= 0) & (local < len(self.table.counts))

    def sample(self, index: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        local, ours = self._local(index)
        counts = torch.where(ours, self.table.counts[local], 1)
        choice = (torch.rand(len(index), generator=generator) * counts).long().clamp(max=counts - 1)
        return torch.where(ours, self.table.table[local, choice.clamp(max=self.table.table.shape[1] - 1)], -1)

    def all_rows(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.table.all_rows(self._local(index)[0])

    def first_ids(self, index: torch.Tensor) -> torch.Tensor:
        """63-bit hashes of the first captions' texts: equal texts, equal ids, on every rank."""
        return _text_ids(self.table.texts_of(self.table.first_ids(self._local(index)[0])))

    def texts_of(self, ids: torch.Tensor) -> list[str]:
        return self.table.texts_of(ids)

    def every_text(self) -> None:
        return None


def _text_ids(texts: list[str]) -> torch.Tensor:
    """A 63-bit hash of each text, the same in every process."""
    return torch.tensor([int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little") >> 1
                         for text in texts], dtype=torch.long)
