"""Decoupled contrastive loss, DCL (Yeh et al., 2022, "Decoupled Contrastive Learning", ECCV).

InfoNCE keeps the positive pair in its own softmax denominator, which couples the positive and negative
gradients: a well-separated positive shrinks the push on the negatives (the "negative-positive coupling"
that makes InfoNCE need large batches). DCL drops the positives from the denominator. For L2-normalised
image and text embeddings x_i, y_j [n, d] and the exponentiated scale s, z_ij = s · x_i·y_j, and with
P(i) the positives of i — {i} alone, or every j with positive_ids_j = positive_ids_i:

    L_i^{I→T} = −(1/|P(i)|) Σ_{p∈P(i)} z_ip + log Σ_{j∉P(i)} exp(z_ij)

L^{T→I} is the same on zᵀ, and L = ½ (mean_i L_i^{I→T} + mean_i L_i^{T→I}). The numerator is the mean
positive logit (not the log of a mean of exponentials) so each positive is pulled with equal weight, as
the uniform multi-positive targets of `clip_loss` do. An anchor whose batch holds no negative (every id
equal) has an empty denominator and is left out of the mean; a batch with no such anchor gives 0.

Unlike InfoNCE the loss is not bounded below by 0: it is −(positive logit) + (log-sum of negatives).

Example (four pairs; each caption lies nearest its own image):

    >>> import torch
    >>> import torch.nn.functional as F
    >>> from transferlab.losses import clip_loss, dcl_loss
    >>> images = torch.eye(4)
    >>> texts = F.normalize(torch.eye(4) + 0.2, dim=-1)
    >>> round(dcl_loss(images, texts, 10.0).item(), 4)
    -6.9078
    >>> round(clip_loss(images, texts, 10.0).item(), 4)  # InfoNCE of the same batch, bounded below by 0
    0.001

In training, `images` and `texts` are the towers' normalised outputs and the scale is the model's
`logit_scale.exp()`.
"""

from __future__ import annotations

import torch
from torch import nn


def _one_direction(logits: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """Mean over anchors with a negative of −mean positive logit + log-sum-exp of the negative logits."""
    has_negative = ~positives.all(dim=1)
    negatives = logits.masked_fill(positives, float("-inf"))
    # a row with no negative is all −inf and would send NaN back through logsumexp; give it a finite dummy
    # row and drop it from the mean with a zero weight
    negatives = negatives.masked_fill(~has_negative[:, None], 0.0)
    weight = positives.to(logits.dtype)
    pull = (logits * weight).sum(dim=1) / weight.sum(dim=1)
    per_anchor = torch.logsumexp(negatives, dim=1) - pull
    counted = has_negative.to(logits.dtype)
    return (per_anchor * counted).sum() / counted.sum().clamp(min=1)


def dcl_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: torch.Tensor | float,
             positive_ids: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric decoupled contrastive loss of normalised embeddings [n, d] with the exponentiated scale."""
    logits = logit_scale * image_emb @ text_emb.T
    if positive_ids is None:
        positives = torch.eye(len(logits), dtype=torch.bool, device=logits.device)
    else:
        positives = positive_ids[:, None] == positive_ids[None, :]
    # the positive relation is symmetric, so the same mask serves the text-to-image direction
    return 0.5 * (_one_direction(logits, positives) + _one_direction(logits.T, positives))


class DCLLoss(nn.Module):
    """Module form of `dcl_loss`; `forward(image_emb, text_emb, logit_scale, positive_ids=None)`."""

    def forward(self, image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: torch.Tensor | float,
                positive_ids: torch.Tensor | None = None) -> torch.Tensor:
        return dcl_loss(image_emb, text_emb, logit_scale, positive_ids=positive_ids)
