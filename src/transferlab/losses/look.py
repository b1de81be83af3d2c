"""LOOK, the leave-one-out k-nearest-neighbour loss (Feng et al., 2022, "Rethinking Supervised Pre-training for
Better Downstream Transferring", ICLR).

Cross-entropy against class weights pulls every image of a class to one point, which throws away the
intra-class variety that downstream tasks need. LOOK asks less: each sample must only be classified correctly
by a vote of its k nearest neighbours, so a class may spread over several modes.

For a normalised embedding e_i [d] with label y_i, and candidate neighbours c_j with labels y_j (a memory
bank of past embeddings plus the other samples of the current batch), s_ij = e_i·c_j. Candidates that are
the sample itself (same sample id, such as its own bank entry from an earlier epoch) are removed — the
leave-one-out — and N_k(i) is the set of the k most similar of the rest. Then

    p_i = Σ_{j∈N_k(i), y_j=y_i} exp(s_ij/τ) / Σ_{j∈N_k(i)} exp(s_ij/τ),   L = −(1/B) Σ_i log max(p_i, ε)

computed as a difference of two log-sum-exps over −inf-masked logits. If no neighbour of i shares its label
(or i has no candidate at all) p_i = 0 and the term is −log ε = `NO_NEIGHBOUR_LOSS` with zero gradient: the
selection of neighbours is not differentiable, so there is nothing to pull towards. The same floor caps the
loss of samples with a tiny p_i. With fewer than k candidates, all of them are used.

Gradients flow through the anchors e_i only; the candidates are detached, as a memory bank's entries are.

Example (six samples in two tight groups on the unit circle, k = 2):

    >>> import torch
    >>> from transferlab.losses import NO_NEIGHBOUR_LOSS, LookLoss
    >>> look = LookLoss(bank_size=16, embed_dim=2, k=2, temperature=0.1)
    >>> angles = torch.tensor([0.0, 0.2, 0.4, 1.5, 1.7, 1.9])
    >>> embeddings = torch.stack([angles.cos(), angles.sin()], dim=1)
    >>> labels = torch.tensor([0, 0, 1, 1, 1, 1])  # sample 2 sits in the first group: no neighbour agrees
    >>> round(look(embeddings, labels, torch.arange(6)).item(), 4)  # sample 2 adds NO_NEIGHBOUR_LOSS / 6
    3.2591
    >>> round(NO_NEIGHBOUR_LOSS, 4)
    18.4207
    >>> int(look.count)  # in training mode the batch is enqueued after it is scored
    6

In training, the embeddings are the normalised outputs of a projection head and a bank holds thousands.
"""

from __future__ import annotations

import math

import torch
from torch import nn

EPS = 1e-8
NO_NEIGHBOUR_LOSS = -math.log(EPS)


def look_loss(embeddings: torch.Tensor, labels: torch.Tensor, bank_embeddings: torch.Tensor,
              bank_labels: torch.Tensor, k: int, temperature: torch.Tensor | float,
              self_mask: torch.Tensor) -> torch.Tensor:
    """Leave-one-out kNN loss of anchors [B, d] with labels [B] against candidates [M, d] with labels [M].

    `self_mask` [B, M] is True where candidate j is anchor i itself and must not count as its neighbour.
    """
    similarity = embeddings @ bank_embeddings.detach().to(embeddings.dtype).T
    similarity = similarity.masked_fill(self_mask, float("-inf"))
    nearest, index = similarity.topk(min(k, similarity.shape[1]), dim=1)
    # with fewer than k non-self candidates, topk also returns masked ones; they stay −inf and weigh nothing
    present = ~self_mask.gather(1, index)
    same = present & (bank_labels[index] == labels[:, None])
    has_same = same.any(dim=1, keepdim=True)
    logits = nearest / temperature
    # rows with no same-label neighbour would take logsumexp over all −inf and return NaN gradients; they are
    # evaluated on a finite dummy row and overwritten with the floor below
    numerator = torch.logsumexp(logits.masked_fill(~same, float("-inf")).masked_fill(~has_same, 0.0), dim=1)
    denominator = torch.logsumexp(logits.masked_fill(~present, float("-inf")).masked_fill(~has_same, 0.0), dim=1)
    log_p = (numerator - denominator).clamp(min=math.log(EPS))
    log_p = torch.where(has_same.squeeze(1), log_p, torch.full_like(log_p, math.log(EPS)))
    return -log_p.mean()


class LookLoss(nn.Module):
    """LOOK with a FIFO memory bank of the last `bank_size` embeddings, held in buffers so checkpoints keep it.

    `forward(embeddings [B, d], labels [B], sample_ids [B])` scores the batch against the bank and the batch's
    other samples, then (in training mode) enqueues the batch, detached, overwriting the oldest entries.
    """

    bank_embeddings: torch.Tensor
    bank_labels: torch.Tensor
    bank_ids: torch.Tensor
    pointer: torch.Tensor
    count: torch.Tensor

    def __init__(self, bank_size: int, embed_dim: int, k: int = 50, temperature: float = 0.07) -> None:
        super().__init__()
        if bank_size < 1 or embed_dim < 1 or k < 1 or temperature <= 0:
            raise ValueError("bank_size, embed_dim and k must be positive integers and temperature positive")
        self.bank_size, self.embed_dim, self.k, self.temperature = bank_size, embed_dim, k, temperature
        self.register_buffer("bank_embeddings", torch.zeros(bank_size, embed_dim))
        self.register_buffer("bank_labels", torch.zeros(bank_size, dtype=torch.long))
        self.register_buffer("bank_ids", torch.zeros(bank_size, dtype=torch.long))
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))  # next slot to overwrite
        self.register_buffer("count", torch.zeros((), dtype=torch.long))  # filled slots, up to bank_size

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor, sample_ids: torch.Tensor) -> torch.Tensor:
        filled = int(self.count)
        candidates = torch.cat([self.bank_embeddings[:filled].to(embeddings.dtype), embeddings.detach()])
        candidate_labels = torch.cat([self.bank_labels[:filled], labels])
        candidate_ids = torch.cat([self.bank_ids[:filled], sample_ids])
        self_mask = sample_ids[:, None] == candidate_ids[None, :]
        loss = look_loss(embeddings, labels, candidates, candidate_labels, self.k, self.temperature, self_mask)
        if self.training:
            self.enqueue(embeddings, labels, sample_ids)
        return loss

    @torch.no_grad()
    def enqueue(self, embeddings: torch.Tensor, labels: torch.Tensor, sample_ids: torch.Tensor) -> None:
        """Write a batch into the bank FIFO, wrapping around, exactly as if its rows were written one by one."""
        count = len(embeddings)
        skipped = max(count - self.bank_size, 0)  # rows that a longer batch would overwrite within itself
        slots = (self.pointer + skipped + torch.arange(count - skipped, device=self.pointer.device)) % self.bank_size
        self.bank_embeddings[slots] = embeddings[skipped:].detach().to(self.bank_embeddings.dtype)
        self.bank_labels[slots] = labels[skipped:].to(self.bank_labels.dtype)
        self.bank_ids[slots] = sample_ids[skipped:].to(self.bank_ids.dtype)
        self.pointer.copy_((self.pointer + count) % self.bank_size)
        self.count.copy_((self.count + count).clamp(max=self.bank_size))

    def extra_repr(self) -> str:
        return f"bank_size={self.bank_size}, embed_dim={self.embed_dim}, k={self.k}, temperature={self.temperature}"
