"""A training batch's text rows: made ready on the host with the batch, turned into text features in the step.

A wholly locked text tower (LiT) embeds each distinct text once, up front (up to LOCKED_TEXT_CACHE texts: a
larger pool's captions, or a pool read whole shards, are embedded as its batches need them), and a batch's rows
are ids into that cache. A trained tower's rows are tokens: the batch's texts are
tokenized when the batch is made, and ids or tokens go to the device through `runtime.to_device` (pinned,
non-blocking), so the step itself never reads a tensor back to the host, which on a GPU would make it wait.
Tokens are padded to the batch's longest text; a chunked step (train.chunk_size) embeds slices of them.
Text-text models have a second table, their queries (left texts), with their own tower.
"""

from __future__ import annotations

from contextlib import AbstractContextManager

import torch

from transferlab.data.captions import CaptionTable, ColumnCaptionTable, StepCaptions
from transferlab.models.dual_encoder import DualEncoder
from transferlab.runtime import to_device
from transferlab.train.objectives import Batch

LOCKED_TEXT_CACHE = 200_000  # distinct captions a locked text tower embeds up front (~300 MB at 384 floats)


class TextRows:
    def __init__(self, model: DualEncoder, captions: CaptionTable | ColumnCaptionTable | StepCaptions | None,
                 queries: CaptionTable | None,
                 autocast: AbstractContextManager, device: torch.device) -> None:
        self.model, self.device = model, device
        self.tables = {False: captions, True: queries}
        self.caches: dict[bool, torch.Tensor] = {}
        for query, table in self.tables.items():
            texts = None if table is None or not model.text_frozen(query) else table.every_text()
            if texts is not None and len(texts) <= LOCKED_TEXT_CACHE:
                with torch.no_grad(), autocast:
                    self.caches[query] = model.text_features(texts, query).float()

    def prepare(self, batch: Batch) -> None:
        """Set `batch.text_rows`: per table (False: captions, True: queries) the rows' cache ids or tokens, on the
        device. The batch's caption and query ids are host tensors."""
        rows = {}
        for query, ids in ((False, batch.caption_ids), (True, batch.query_ids)):
            if ids is None:
                continue
            if query in self.caches:
                rows[query] = to_device(ids, self.device)
            else:
                tokens = self.model.text_tower_for(query).tokenize(self.tables[query].texts_of(ids))
                rows[query] = {k: to_device(v, self.device) if isinstance(v, torch.Tensor) else v
                               for k, v in tokens.items()}
        batch.text_rows = rows

    def __call__(self, batch: Batch, start: int, stop: int, query: bool = False) -> torch.Tensor:
        """The text tower's features of rows start .. stop of the batch's captions (or queries)."""
        rows = batch.text_rows[query]
        if query in self.caches:
            return self.caches[query][rows[start:stop]]
        return self.model.text_tower_for(query)({k: v[start:stop] if isinstance(v, torch.Tensor) else v
                                                 for k, v in rows.items()})
