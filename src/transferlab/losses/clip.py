"""Symmetric InfoNCE, the CLIP loss, with multi-positive targets and label smoothing.

For L2-normalised image embeddings x_i and text embeddings y_j of a batch of n pairs, and an
exponentiated scale s (1 / temperature):

    z_ij = s · x_i·y_j (+ b)
    L = ½ [ Σ_i CE(z_i·, t_i·) + Σ_j CE(z_·j, t_·j) ] / n,   CE(z, t) = −Σ_k t_k log softmax(z)_k

With `positive_ids` None, t is the identity (pair i matches only caption i), as in Radford et al. (2021).
With ids (class labels, or ids of identical captions), every pair with equal ids is a match and t_i· is
uniform over the matches of i — otherwise two images of one class, each captioned from that class, would
be pushed away from each other's equally true caption (the multi-positive targets of Khosla et al.,
2020, "Supervised Contrastive Learning", and of UniCL, Yang et al., 2022).

Label smoothing ε (Szegedy et al., 2016) mixes the targets with the uniform distribution over the batch,
t ← (1 − ε)·t + ε/n, which caps how far the loss pushes a pair apart from near-duplicate negatives.
ε = 0 is the plain loss. The bias b shifts every logit of a row alike, so it cannot change a softmax
loss; it is accepted only so that the CLIP and SigLIP losses share a call signature.

Inputs: image_emb, text_emb [n, d] normalised; logit_scale a scalar tensor or float (already
exponentiated); positive_ids [n] integer ids or None. Returns a scalar.

Example (four pairs; each caption lies nearest its own image):

    >>> import torch
    >>> import torch.nn.functional as F
    >>> from transferlab.losses import ClipLoss, clip_loss
    >>> images = torch.eye(4)
    >>> texts = F.normalize(torch.eye(4) + 0.2, dim=-1)
    >>> round(clip_loss(images, texts, 10.0).item(), 4)
    0.001
    >>> round(clip_loss(images, texts.roll(1, dims=0), 10.0).item(), 4)  # captions shuffled
    8.0074
    >>> labels = torch.tensor([0, 0, 1, 2])  # pairs 0 and 1 are one class: caption 1 also matches image 0
    >>> loss = clip_loss(images, texts, 10.0, positive_ids=labels, label_smoothing=0.1)
    >>> round(loss.item(), 4)
    2.4029
    >>> torch.equal(ClipLoss(label_smoothing=0.1)(images, texts, 10.0, labels), loss)  # the module form
    True
    >>> clip_loss(images, texts, 10.0, label_smoothing=1.5)
    Traceback (most recent call last):
    ...
    ValueError: label_smoothing must lie in [0, 1], got 1.5

In training, `images` and `texts` are the towers' normalised outputs and the scale is the model's
`logit_scale.exp()`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def check_label_smoothing(label_smoothing: float) -> float:
    """`label_smoothing` itself if it lies in [0, 1] (the weight ε of the uniform targets), else ValueError."""
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing must lie in [0, 1], got {label_smoothing}")
    return label_smoothing


def clip_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: torch.Tensor | float,
              logit_bias: torch.Tensor | float | None = None,
              positive_ids: torch.Tensor | None = None, label_smoothing: float = 0.0) -> torch.Tensor:
    """Symmetric InfoNCE of normalised embeddings [n, d] with the exponentiated scale."""
    check_label_smoothing(label_smoothing)
    logits = logit_scale * image_emb @ text_emb.T
    if logit_bias is not None:
        logits = logits + logit_bias
    if positive_ids is None:
        labels = torch.arange(len(logits), device=logits.device)
        return 0.5 * (F.cross_entropy(logits, labels, label_smoothing=label_smoothing)
                      + F.cross_entropy(logits.T, labels, label_smoothing=label_smoothing))
    matches = (positive_ids[:, None] == positive_ids[None, :]).to(logits.dtype)
    targets = matches / matches.sum(dim=1, keepdim=True)  # symmetric, so it serves both directions
    if label_smoothing > 0:
        targets = (1 - label_smoothing) * targets + label_smoothing / len(targets)
    image_to_text = -(targets * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
    text_to_image = -(targets * F.log_softmax(logits.T, dim=1)).sum(dim=1).mean()
    return 0.5 * (image_to_text + text_to_image)


class ClipLoss(nn.Module):
    """Module form of `clip_loss`; `forward(image_emb, text_emb, logit_scale, positive_ids=None)`.

    The bias is left out of `forward` because it cannot change a softmax loss.
    """

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.label_smoothing = check_label_smoothing(label_smoothing)

    def forward(self, image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: torch.Tensor | float,
                positive_ids: torch.Tensor | None = None) -> torch.Tensor:
        return clip_loss(image_emb, text_emb, logit_scale, positive_ids=positive_ids,
                         label_smoothing=self.label_smoothing)

    def extra_repr(self) -> str:
        return f"label_smoothing={self.label_smoothing}"
