"""`ByteTokenizer`: UTF-8 bytes as token ids, so a text tower trains from scratch with no vocabulary file.

Ids 0..255 are the bytes themselves; 256..258 are PAD, BOS and EOS. Every row reads
`BOS bytes... EOS PAD...` and is padded only to the longest row of its batch, which keeps short-caption
batches cheap. Byte-level input follows ByT5 (Xue et al. 2022).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


class ByteTokenizer:
    PAD = 256
    BOS = 257
    EOS = 258
    vocab_size = 259

    def encode(self, text: str, context_length: int = 64) -> list[int]:
        """Ids for one text with BOS and EOS, truncated so that EOS is still the last token."""
        if context_length < 2:
            raise ValueError(f"context_length must be at least 2 (BOS and EOS), got {context_length}")
        body = text.encode("utf-8")
        if len(body) > context_length - 2:
            # Cut on a character boundary so truncation never leaves half of a multi-byte character.
            body = body[:context_length - 2].decode("utf-8", errors="ignore").encode("utf-8")
        return [self.BOS, *body, self.EOS]

    def __call__(self, texts: list[str], context_length: int = 64) -> dict[str, torch.Tensor]:
        rows = [self.encode(text, context_length) for text in texts]
        length = max((len(row) for row in rows), default=0)
        input_ids = torch.full((len(rows), length), self.PAD, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), length), dtype=torch.bool)
        for i, row in enumerate(rows):
            input_ids[i, :len(row)] = torch.tensor(row, dtype=torch.long)
            attention_mask[i, :len(row)] = True
        return {"input_ids": input_ids, "attention_mask": attention_mask}

    def decode(self, ids: Iterable[int] | torch.Tensor) -> str:
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        return bytes(i for i in ids if 0 <= i < 256).decode("utf-8", errors="replace")
