"""Supervised contrastive loss (SupCon, L_out form) and its instance-level special case NT-Xent (SimCLR).

Khosla et al. (2020), "Supervised Contrastive Learning", NeurIPS; Chen et al. (2020), "A Simple Framework
for Contrastive Learning of Visual Representations" (SimCLR), ICML.

For L2-normalised embeddings z [N, d] (every view of every sample stacked), temperature τ and ids
[N] — samples with equal ids are positives of one another — P(i) = {p ≠ i : id_p = id_i} and

    L = −(1/|A|) Σ_{i∈A} (1/|P(i)|) Σ_{p∈P(i)} log( exp(z_i·z_p/τ) / Σ_{a≠i} exp(z_i·z_a/τ) )

Each anchor is left out of its own denominator. A = {i : P(i) ≠ ∅}: an anchor with no positive (a class
seen once in the batch) has nothing to pull towards and is skipped, and the mean runs over the anchors that
remain, so adding singletons to a batch changes the loss only through the denominators; a batch with no
positive pair at all gives 0. Khosla et al.'s extra factor τ / τ_base is left out: it only rescales.

With instance ids (the views of one image share an id, every image its own), this is NT-Xent; with class
labels it is SupCon. `views=V` says the embeddings are V view blocks stacked view-major (row v·B + b is view
v of sample b) and `positive_ids` [B] gives one id per sample.

Example (three samples, two views each; each sample's second view lies nearest its first):

    >>> import torch
    >>> import torch.nn.functional as F
    >>> from transferlab.losses import ntxent_loss, supcon_loss
    >>> view_a = torch.eye(3)
    >>> view_b = F.normalize(torch.eye(3) + 0.2, dim=-1)
    >>> round(ntxent_loss(view_a, view_b, temperature=0.5).item(), 4)
    0.5962
    >>> embeddings = torch.cat([view_a, view_b])  # view-major: row v·B + b is view v of sample b
    >>> round(supcon_loss(embeddings, torch.arange(3), temperature=0.5, views=2).item(), 4)  # instance ids
    0.5962
    >>> round(supcon_loss(embeddings, torch.tensor([0, 0, 1]), temperature=0.5, views=2).item(), 4)  # classes
    1.3133

In training, the views are the projection head's normalised outputs for two augmentations of a batch.
"""

from __future__ import annotations

import torch
from torch import nn


def supcon_loss(embeddings: torch.Tensor, positive_ids: torch.Tensor, temperature: torch.Tensor | float = 0.1,
                views: int | None = None) -> torch.Tensor:
    """SupCon / NT-Xent of normalised embeddings [N, d] with ids [N] (or [N / views] with `views`)."""
    if views is not None:
        if views < 1 or len(embeddings) != views * len(positive_ids):
            raise ValueError(f"{len(embeddings)} embeddings are not {views} views of {len(positive_ids)} ids")
        positive_ids = positive_ids.repeat(views)
    elif len(positive_ids) != len(embeddings):
        raise ValueError(f"{len(positive_ids)} ids for {len(embeddings)} embeddings")
    logits = embeddings @ embeddings.T / temperature
    itself = torch.eye(len(logits), dtype=torch.bool, device=logits.device)
    positives = (positive_ids[:, None] == positive_ids[None, :]) & ~itself
    counts = positives.sum(dim=1)
    counted = counts > 0
    # an anchor's own similarity is excluded from its denominator; a row that would be all −inf (N = 1)
    # has no positive either, so it gets a finite dummy row to keep NaN out of the backward pass
    others = logits.masked_fill(itself, float("-inf")).masked_fill(~counted[:, None], 0.0)
    log_prob = logits - torch.logsumexp(others, dim=1, keepdim=True)
    per_anchor = -(log_prob * positives.to(logits.dtype)).sum(dim=1) / counts.clamp(min=1).to(logits.dtype)
    weight = counted.to(logits.dtype)
    return (per_anchor * weight).sum() / weight.sum().clamp(min=1)


def ntxent_loss(view_a: torch.Tensor, view_b: torch.Tensor, temperature: torch.Tensor | float = 0.1) -> torch.Tensor:
    """NT-Xent (SimCLR) of two normalised views [B, d]: row b of each view is the other's only positive."""
    ids = torch.arange(len(view_a), device=view_a.device)
    return supcon_loss(torch.cat([view_a, view_b]), ids, temperature, views=2)


class SupConLoss(nn.Module):
    """Module form of `supcon_loss`; `forward(embeddings, positive_ids, views=None)`."""

    def __init__(self, temperature: float = 0.1) -> None:
        super().__init__()
        self.temperature = temperature

    def forward(self, embeddings: torch.Tensor, positive_ids: torch.Tensor, views: int | None = None) -> torch.Tensor:
        return supcon_loss(embeddings, positive_ids, self.temperature, views=views)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"


class NTXentLoss(nn.Module):
    """Module form of `ntxent_loss`; `forward(view_a, view_b)`."""

    def __init__(self, temperature: float = 0.1) -> None:
        super().__init__()
        self.temperature = temperature

    def forward(self, view_a: torch.Tensor, view_b: torch.Tensor) -> torch.Tensor:
        return ntxent_loss(view_a, view_b, self.temperature)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"
