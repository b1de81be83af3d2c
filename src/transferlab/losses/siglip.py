"""SigLIP: the pairwise sigmoid loss of Zhai et al. (2023), "Sigmoid Loss for Language Image Pre-Training".

Every image–text pair of the batch is an independent binary problem. For L2-normalised x_i, y_j [n, d],
the exponentiated scale s and the bias b:

    z_ij = s · x_i·y_j + b,   ℓ_ij = +1 if i and j match, −1 otherwise
    L = −(1/n) Σ_i Σ_j log σ(ℓ_ij · z_ij)

A pair matches on the diagonal, or, with `positive_ids` [n], wherever the ids are equal. The sum over
all n² pairs is divided by n, the number of images, not n² — as in the paper's pseudo-code and in
`open_clip.loss.SigLipLoss`, so the loss grows with the batch and its scale is comparable across papers.

The bias is what makes the loss work: with n − 1 negatives per positive, an unbiased start spends the
first steps pushing every logit down. The paper starts at b = −10 and s = 10 (a learnable log-scale of
log 10); `siglip_init` builds those two parameters.

Example (four pairs; each caption lies nearest its own image):

    >>> import torch
    >>> import torch.nn.functional as F
    >>> from transferlab.losses import siglip_init, siglip_loss
    >>> log_scale, bias = siglip_init()
    >>> round(log_scale.exp().item(), 4), bias.item()
    (10.0, -10.0)
    >>> images = torch.eye(4)
    >>> texts = F.normalize(torch.eye(4) + 0.2, dim=-1)
    >>> round(siglip_loss(images, texts, log_scale.exp(), bias).item(), 4)
    0.9091
    >>> round(siglip_loss(images, texts, log_scale.exp(), 0.0).item(), 4)  # unbiased: the 12 negatives weigh
    5.355

In training, `images` and `texts` are the towers' normalised outputs and `log_scale`, `bias` are learnt.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

SIGLIP_INIT_SCALE = 10.0
SIGLIP_INIT_BIAS = -10.0


def siglip_init(init_scale: float = SIGLIP_INIT_SCALE,
                init_bias: float = SIGLIP_INIT_BIAS) -> tuple[nn.Parameter, nn.Parameter]:
    """Learnable (log-scale, bias) scalars at the paper's start: exp(log-scale) = init_scale, bias = init_bias."""
    if init_scale <= 0:
        raise ValueError(f"init_scale must be positive, got {init_scale}")
    return nn.Parameter(torch.tensor(math.log(init_scale))), nn.Parameter(torch.tensor(float(init_bias)))


def siglip_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: torch.Tensor | float,
                logit_bias: torch.Tensor | float, positive_ids: torch.Tensor | None = None) -> torch.Tensor:
    """Sigmoid loss of normalised embeddings [n, d], summed over the n² pairs and divided by n."""
    logits = logit_scale * image_emb @ text_emb.T + logit_bias
    if positive_ids is None:
        matches = torch.eye(len(logits), dtype=torch.bool, device=logits.device)
    else:
        matches = positive_ids[:, None] == positive_ids[None, :]
    signs = matches.to(logits.dtype) * 2 - 1
    return -F.logsigmoid(signs * logits).sum() / len(image_emb)


class SigLipLoss(nn.Module):
    """Module form of `siglip_loss`; `forward(image_emb, text_emb, logit_scale, logit_bias, positive_ids=None)`."""

    def forward(self, image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: torch.Tensor | float,
                logit_bias: torch.Tensor | float, positive_ids: torch.Tensor | None = None) -> torch.Tensor:
        return siglip_loss(image_emb, text_emb, logit_scale, logit_bias, positive_ids=positive_ids)
