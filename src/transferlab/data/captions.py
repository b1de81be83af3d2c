"""The caption set of a dataset, stored once, and the per-step choice of one caption per image.

Many images share captions (templated labels, repeated alt-texts), so captions are deduplicated into
`texts`; each image keeps the ids of its captions. A locked text tower then embeds `texts` once.
"""

from __future__ import annotations

import torch

from transferlab.errors import UserError


class CaptionTable:
    def __init__(self, captions: list[list[str]]) -> None:
        ids: dict[str, int] = {}
        rows = [[ids.setdefault(c, len(ids)) for c in sample] for sample in captions]
        self.texts: list[str] = list(ids)
        self.counts = torch.tensor([len(r) for r in rows], dtype=torch.long)
        if len(rows) and int(self.counts.min()) == 0:
            raise UserError(f"{int((self.counts == 0).sum())} of {len(rows)} images have no caption (label-only data), "
                            f"and training pairs each image with a caption. Give the dataset `templates` (e.g. "
                            f"['a photo of a {{}}.']) to caption images by their class, or train an image-only "
                            f"objective (supcon, simclr, supervised-ce).")
        self.table = torch.zeros(len(rows), int(self.counts.max()), dtype=torch.long)
        for i, row in enumerate(rows):
            self.table[i, : len(row)] = torch.tensor(row)

    def sample(self, index: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """One caption id per image in `index`, uniformly among that image's captions."""
        counts = self.counts[index]
        choice = (torch.rand(len(index), generator=generator) * counts).long().clamp(max=counts - 1)
        return self.table[index, choice]
