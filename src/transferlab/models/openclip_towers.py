"""Trainable towers built by open_clip: `model.image.name: openclip:<config>` and `model.text.name:
openclip:<config>`, so that transferlab and open_clip's own trainer train the same network.

Each tower is the corresponding part of `open_clip.create_model(config)` — its `visual` tower, or its text
transformer with the token embedding, final norm and text projection — built from the current state of
torch's random generator, which the build leaves untouched. Both towers of a recipe are therefore the parts
of one and the same open_clip model, and after `torch.manual_seed(s)` (a recipe's `seed: s`) their weights
equal those of the model open_clip's trainer builds with `--seed s`. The towers end in open_clip's own
projection (`width` is the config's embed_dim, `projected` tells the dual encoder to add none), so with the
same data, loss and optimizer both tools compute the same maths. One difference in cost, not in maths: texts
are padded to the longest text of their batch instead of to open_clip's 77-token context, when the text
transformer is causal and pools at the end-of-text token (open_clip's CLIP text towers), since no output
then depends on that padding.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

from transferlab.errors import UserError
from transferlab.models.openclip import resolve_config


def create_openclip(config: str) -> nn.Module:
    """open_clip's model of `config` (a registered name or a model-config JSON file), random init, built
    from the current RNG state without advancing it. The text tower is a separate module (custom text)."""
    import open_clip

    name = resolve_config(config)
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # open_clip warns "no pretrained weights loaded" when none are asked for
    try:
        with torch.random.fork_rng(devices=[]):
            model = open_clip.create_model(name, pretrained=None, force_custom_text=True)
    finally:
        root.setLevel(level)
    for module in model.modules():
        if type(module) is nn.MultiheadAttention and module.batch_first:
            module.__class__ = BatchFirstSelfAttention  # same parameters and state-dict keys
    return model


class BatchFirstSelfAttention(nn.MultiheadAttention):
    """nn.MultiheadAttention whose self-attention stays batch-first throughout.

    torch's batch-first attention transposes its input to sequence-first, and its output back, at every block;
    in training (no fast path) these copies of strided tensors took ~10% of a CPU step. Here the packed
    input projection is split into heads by a view and goes straight into scaled_dot_product_attention: the
    same products of the same weights (equal to torch's outputs, bit for bit, on the CPU here). Anything
    else (cross-attention, attention weights, key padding masks) takes torch's own path.
    """

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
                average_attn_weights=True, is_causal=False):
        if not (query is key is value and query.dim() == 3 and not need_weights and key_padding_mask is None
                and self._qkv_same_embed_dim and self.bias_k is None and not self.add_zero_attn and not is_causal):
            return super().forward(query, key, value, key_padding_mask, need_weights, attn_mask, average_attn_weights,
                                   is_causal)
        batch, length, width = query.shape
        qkv = F.linear(query, self.in_proj_weight, self.in_proj_bias)
        q, k, v = qkv.view(batch, length, 3, self.num_heads, width // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask,
                                             dropout_p=self.dropout if self.training else 0.0)
        return self.out_proj(out.transpose(1, 2).reshape(batch, length, width)), None


class OpenClipImageTower(nn.Module):
    """open_clip's vision tower (`model.visual`): preprocessed images [B, 3, H, W] → embeddings [B, embed_dim]."""

    external_weights = False
    projected = True

    def __init__(self, config: str, in_channels: int, image_size: int) -> None:
        super().__init__()
        self.visual = create_openclip(config).visual
        expected = self.visual.image_size
        expected = expected[0] if isinstance(expected, (tuple, list)) else expected
        if in_channels != 3 or image_size != expected:
            raise UserError(f"open_clip config '{config}' takes {expected}x{expected} RGB images, but the recipe has "
                            f"model.image_size {image_size} and model.channels {in_channels}. Set model.image_size: "
                            f"{expected} and model.channels: 3 (grey images are then repeated over the channels).")
        self.width = self.visual.output_dim

    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        self.visual.set_grad_checkpointing(enabled)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.visual(images)


class OpenClipTextTower(nn.Module):
    """open_clip's text transformer with its tokenizer: texts → embeddings [B, embed_dim]."""

    external_weights = False
    projected = True

    def __init__(self, config: str) -> None:
        import open_clip

        super().__init__()
        self.text = create_openclip(config).text
        self.tokenizer = open_clip.get_tokenizer(resolve_config(config))
        self.width = self.text.output_dim

    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        self.text.set_grad_checkpointing(enabled)

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """Token ids padded to the longest text of the batch, not to the context length, where that leaves
        the embeddings unchanged (see `_trimmable`)."""
        ids = self.tokenizer(list(texts))
        if self._trimmable() and len(ids):
            positions = torch.arange(1, ids.shape[1] + 1)
            ids = ids[:, :int(((ids != self.text.pad_id) * positions).max())]  # up to the last non-pad token
        return {"ids": ids}

    def forward(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        ids = tokens["ids"]
        if ids.shape[1] == self.text.context_length:
            return self.text(ids)
        return self._forward_trimmed(ids)

    def _trimmable(self) -> bool:
        """A causal text transformer that pools at the end-of-text token never lets a token see the padding
        after it, so padding beyond the batch's longest text can be cut without changing any output: the text
        tower then costs what the captions' lengths cost (a caption is ~10 tokens, the context 77)."""
        text = self.text
        return (text.attn_mask is not None and text.cls_emb is None and not text.use_pad_mask
                and text.pool_type in ("argmax", "eos"))

    def _forward_trimmed(self, ids: torch.Tensor) -> torch.Tensor:
        """open_clip's TextTransformer.forward on a sequence shorter than its context (which it refuses), for
        the towers `_trimmable` accepts."""
        from open_clip.transformer import text_global_pool

        text, length = self.text, ids.shape[1]
        x = text.token_embedding(ids).to(text.transformer.get_cast_dtype())
        x = text.transformer(x + text.positional_embedding[:length].to(x.dtype),
                             attn_mask=text.attn_mask[:length, :length])
        pooled = text_global_pool(text.ln_final(x), ids, pool_type=text.pool_type, eos_token_id=text.eos_id)
        if text.text_projection is None:
            return pooled
        if isinstance(text.text_projection, nn.Linear):
            return text.text_projection(pooled)
        return pooled @ text.text_projection
