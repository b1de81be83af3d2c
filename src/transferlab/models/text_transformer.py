"""A small transformer text tower trained from scratch over `ByteTokenizer` ids.

Learned token and position embeddings, pre-norm transformer blocks and a final LayerNorm; the text's
feature is the hidden state at its EOS token, as in CLIP (Radford et al. 2021). Registered as
`text-transformer-small` (width 128, 3 layers) and `text-transformer-tiny` (width 64, 2 layers).
"""

from __future__ import annotations

import torch
from torch import nn

from transferlab.data.tokenizer import ByteTokenizer
from transferlab.models.blocks import run_blocks
from transferlab.models.registry import TEXT_TOWERS


class TextTransformer(nn.Module):
    external_weights = False

    def __init__(self, width: int, layers: int, heads: int, context_length: int = 64,
                 dropout: float = 0.0) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"width ({width}) must be divisible by heads ({heads})")
        self.width = width
        self.context_length = context_length
        self.tokenizer = ByteTokenizer()
        self.token_embedding = nn.Embedding(ByteTokenizer.vocab_size, width)
        self.position_embedding = nn.Parameter(torch.empty(context_length, width))
        # Bidirectional (padding mask only): no LM objective here, which is all CLIP's causal mask served.
        block = nn.TransformerEncoderLayer(width, heads, dim_feedforward=4 * width, dropout=dropout,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
        self.final_norm = nn.LayerNorm(width)
        self.grad_checkpointing = False
        # CLIP's initialisation: small embeddings keep early attention close to uniform.
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.position_embedding, std=0.01)

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        return self.tokenizer(texts, self.context_length)

    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        self.grad_checkpointing = enabled

    def lockable_blocks(self) -> tuple[list[nn.Module], list[nn.Module]]:
        """The blocks in order, and what follows them (kept trainable when the last blocks are)."""
        return list(self.blocks.layers), [self.final_norm]

    def forward(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        input_ids, attention_mask = tokens["input_ids"], tokens["attention_mask"].bool()
        length = input_ids.shape[1]
        if length > self.context_length:
            raise ValueError(f"got {length} tokens per text but the tower's context_length is "
                             f"{self.context_length}; tokenize with the tower's own tokenize()")
        return self.forward_embeddings(self.embed_tokens(input_ids), attention_mask)

    def embed_tokens(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Token embeddings [B, L, width] of ids, before position embeddings: what `forward_embeddings` takes."""
        return self.token_embedding(input_ids)

    def forward_embeddings(self, embeddings: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """`forward` from token embeddings [B, L, width] instead of ids, so vectors that are no token (CoOp's
        learned context) can take token positions. Rows read `BOS ... EOS PAD...` as `tokenize` makes them."""
        attention_mask = attention_mask.bool()
        length = embeddings.shape[1]
        if length > self.context_length:
            raise ValueError(f"got {length} token positions but the tower's context_length is {self.context_length}")
        hidden = embeddings + self.position_embedding[:length]
        hidden = self.final_norm(run_blocks(self.blocks, hidden, self.grad_checkpointing,
                                            src_key_padding_mask=~attention_mask))
        # Rows are `BOS bytes... EOS PAD...`, so EOS sits at the last real position.
        eos = attention_mask.sum(dim=1) - 1
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), eos]


@TEXT_TOWERS.register("text-transformer-small")
def text_transformer_small(**options) -> TextTransformer:
    return TextTransformer(**{"width": 128, "layers": 3, "heads": 4, "context_length": 64, **options})


@TEXT_TOWERS.register("text-transformer-tiny")
def text_transformer_tiny(**options) -> TextTransformer:
    return TextTransformer(**{"width": 64, "layers": 2, "heads": 2, "context_length": 64, **options})
