"""One backward pass of a contrastive loss over a batch too large to embed at once.

A contrastive loss couples every pair in the batch, so splitting the batch into micro-batches and adding
their losses is not the full-batch loss. The two exact ways to spend less memory are:

- Gradient caching (Gao et al., 2021, "Scaling Deep Contrastive Learning Batch Size under Memory Limited
  Setup"): embed every chunk without building a graph, compute the loss and its gradient with respect to
  the embeddings once, then re-embed each chunk with a graph and back-propagate the cached embedding
  gradients into the towers.
- Accumulation: after the same graph-free pass, re-embed one chunk of one input at a time with a graph and
  compute the loss with that chunk live and everything else cached, back-propagating each time. The towers then receive
  exactly their full-batch gradients. The loss's own parameters (the temperature, the SigLIP bias) would
  receive theirs once per chunk — k times too much, the error open_clip's accumulation makes — so they take
  part in the first chunk's loss only.

Both replay every chunk with the global RNG state it had in the first pass, so dropout draws the same
masks twice, and restore the model's buffers after the first pass, so BatchNorm statistics are updated
once. (A chunked BatchNorm still normalises by chunk statistics: exact equality with the unchunked step
holds for towers without batch-dependent layers.)

`inputs` pairs, per input (images, captions, a second view), a function `encode(start, stop)` returning
the embeddings of rows start..stop (`EncodeRows`) with the number of rows; inputs may differ in size (all captions of a
batch's images, say). `loss_fn(embeddings, with_params)` returns the scalar loss of the full embeddings,
with the loss's own parameters detached when `with_params` is False.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

EncodeRows = Callable[[int, int], torch.Tensor]  # the embeddings of one input's rows start..stop
Inputs = Sequence[tuple[EncodeRows, int]]  # per input: how to embed its rows, and how many there are
LossFn = Callable[[list[torch.Tensor], bool], torch.Tensor]


def backward_step(inputs: Inputs, loss_fn: LossFn, model: nn.Module,
                  chunk_size: int | None = None, mode: str = "cache",
                  scale: Callable[[torch.Tensor], torch.Tensor] = lambda loss: loss) -> torch.Tensor:
    """Back-propagate the loss of a batch; return the loss (detached).

    mode: "cache" (gradient caching) or "accumulate"; either is a plain step when `chunk_size` is None or
    covers every input. `scale` maps the loss before backward (a mixed-precision gradient scaler).
    """
    if chunk_size is None or all(chunk_size >= size for _, size in inputs):
        loss = loss_fn([encode(0, size) for encode, size in inputs], True)
        scale(loss).backward()
        return loss.detach()
    if mode not in ("cache", "accumulate"):
        raise ValueError(f"unknown large-batch mode {mode!r}")
    chunks = [[(start, min(start + chunk_size, size)) for start in range(0, size, chunk_size)]
              for _, size in inputs]
    cached, rng = _embed_without_graph([encode for encode, _ in inputs], chunks, model)
    if mode == "cache":
        live = [embedding.requires_grad_() for embedding in cached]
        loss = loss_fn(live, True)
        scale(loss).backward()
        for (encode, _), embedding, spans, states in zip(inputs, live, chunks, rng, strict=True):
            for (start, stop), state in zip(spans, states, strict=True):
                with _replayed(state):
                    encode(start, stop).backward(embedding.grad[start:stop])
        return loss.detach()
    after, first_loss = _rng_state(), None
    for which, ((encode, _), spans, states) in enumerate(zip(inputs, chunks, rng, strict=True)):
        for (start, stop), state in zip(spans, states, strict=True):
            with _replayed(state):
                part = torch.cat([cached[which][:start], encode(start, stop), cached[which][stop:]])
            loss = loss_fn([part if i == which else e for i, e in enumerate(cached)], first_loss is None)
            scale(loss).backward()
            first_loss = loss.detach() if first_loss is None else first_loss
    _set_rng_state(after)
    return first_loss


def _embed_without_graph(encodes: Sequence[EncodeRows], chunks: list[list[tuple[int, int]]],
                         model: nn.Module) -> tuple[list[torch.Tensor], list[list[tuple]]]:
    buffers = [buffer.detach().clone() for buffer in model.buffers()]
    embeddings, rng = [], []
    with torch.no_grad():
        for encode, spans in zip(encodes, chunks, strict=True):
            states, parts = [], []
            for start, stop in spans:
                states.append(_rng_state())
                parts.append(encode(start, stop))
            embeddings.append(torch.cat(parts))
            rng.append(states)
    for buffer, saved in zip(model.buffers(), buffers, strict=True):
        buffer.copy_(saved)
    return embeddings, rng


def _rng_state() -> tuple:
    return torch.get_rng_state(), torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None


def _set_rng_state(state: tuple) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state_all(state[1])


class _replayed:
    """Run a block with a saved RNG state, then put the surrounding RNG state back."""

    def __init__(self, state: tuple) -> None:
        self.state = state

    def __enter__(self) -> None:
        self.outer = _rng_state()
        _set_rng_state(self.state)

    def __exit__(self, *exc) -> None:
        _set_rng_state(self.outer)
