"""The CLIP and SigLIP losses of the global batch under torch.distributed (gloo on CPU, NCCL on GPU).

W ranks each hold B pairs (the same B on every rank: pad or drop the last batch), N = W·B pairs in all;
rank r holds the rows r·B … (r+1)·B − 1 of the global batch. `all_gather_with_grad`
(transferlab.distributed.gather) concatenates the ranks' embeddings in rank order, and its backward hands
each rank the gradient of its own rows summed over the losses of all ranks:

    forward:  X = [x_0; x_1; …; x_{W−1}]                       [N, d] on every rank
    backward: ∂/∂x_r = Σ_q (∂L_q/∂X)[rows of r]                 (all-reduce sum, then slice)

Why the gradients are exact. Let L_q be what rank q returns and θ any parameter. θ reaches L_q through the
local embeddings of every rank (via the gather) and, for parameters replicated on every rank such as the
logit scale, directly. Rank r's autograd therefore yields g_r = (∂x_r/∂θ)ᵀ Σ_q ∂L_q/∂x_r + ∂L_r/∂θ|direct,
and DistributedDataParallel averages: (1/W) Σ_r g_r = ∂/∂θ [ (1/W) Σ_q L_q ]. Every loss below is written
so that the mean of the ranks' losses, (1/W) Σ_q L_q, equals the single-process loss L of the concatenated
batch; so after DDP's average every parameter gradient equals the single-process full-batch gradient ∂L/∂θ,
with no further scaling (the all-reduce sum in the gather's backward and DDP's division by W cancel).
The plain sum of the ranks' gradients is W·∂L/∂θ. Without DDP, all-reduce the gradients and divide by W.

The two modes (`local_loss`):

- `False`: every rank gathers images and texts and computes L itself, with `clip_loss` / `siglip_loss` on
  the gathered tensors. Each rank's loss value equals L exactly; O(N²) logits per rank.
- `True`: rank q computes only its own rows against all global columns — CLIP: images_q·textsᵀ and
  texts_q·imagesᵀ, targets offset by q·B; SigLIP: images_q·textsᵀ (every rank's texts are negatives for the
  local images), so only the texts are gathered. Each row term is averaged over the B local rows (CLIP) or
  summed and divided by B (SigLIP, normalised like `siglip_loss`, by the number of images). Rank q's value
  L_q is then the loss of its own rows, not L; the mean over ranks (1/W) Σ_q L_q equals L, and so do the
  DDP-averaged gradients. O(B·N) logits per rank. To log L, all-reduce the detached value and divide by W.

`positive_ids` (multi-positive targets, gathered without gradient) and CLIP's `label_smoothing` mean what
they mean in `clip_loss` and `siglip_loss`, over the global batch. Outside torch.distributed (not
initialised) the gather is the identity and each function equals its single-process loss.

Every rank must call the loss and its backward the same number of times in the same order: both the
forward gather and the backward all-reduce are collectives.

Example (one process, so each loss equals its single-process loss):

    >>> import torch
    >>> import torch.nn.functional as F
    >>> from transferlab.losses import clip_loss, distributed_clip_loss, distributed_siglip_loss, siglip_loss
    >>> images = torch.eye(4)
    >>> texts = F.normalize(torch.eye(4) + 0.2, dim=-1)
    >>> torch.allclose(distributed_clip_loss(images, texts, 10.0, local_loss=True), clip_loss(images, texts, 10.0))
    True
    >>> torch.allclose(distributed_siglip_loss(images, texts, 10.0, -10.0, local_loss=True),
    ...                siglip_loss(images, texts, 10.0, -10.0))
    True

Inside a DDP training step under torchrun (not run as a doctest: it needs several processes)::

    img, txt = F.normalize(model.encode_image(x), dim=-1), F.normalize(model.encode_text(t), dim=-1)
    loss = distributed_clip_loss(img, txt, model.logit_scale.exp(), local_loss=True)
    loss.backward()  # DDP averages: the parameter gradients are those of the full global batch
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

from transferlab.distributed.gather import all_gather_no_grad, all_gather_with_grad, rank_and_size
from transferlab.losses.clip import check_label_smoothing, clip_loss
from transferlab.losses.siglip import siglip_loss


def _local_matches(rows: int, positive_ids: torch.Tensor | None, group: dist.ProcessGroup | None,
                   device: torch.device) -> torch.Tensor:
    """[B, N] boolean: local row i matches global column j (the diagonal offset by rank·B, or equal ids)."""
    rank, world_size = rank_and_size(group)
    if positive_ids is None:
        local_ids = torch.arange(rank * rows, (rank + 1) * rows, device=device)
        global_ids = torch.arange(world_size * rows, device=device)
    else:
        local_ids, global_ids = positive_ids, all_gather_no_grad(positive_ids, group)
    return local_ids[:, None] == global_ids[None, :]


def distributed_clip_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: torch.Tensor | float,
                          local_loss: bool = False, *, logit_bias: torch.Tensor | float | None = None,
                          positive_ids: torch.Tensor | None = None, label_smoothing: float = 0.0,
                          group: dist.ProcessGroup | None = None) -> torch.Tensor:
    """Symmetric InfoNCE of the global batch from this rank's normalised embeddings [B, d].

    local_loss=False: the value equals `clip_loss` of the concatenated batch on every rank.
    local_loss=True: the loss of this rank's rows against all columns; the mean over ranks equals
    `clip_loss` of the concatenated batch. In both modes the DDP-averaged gradients equal its gradients.
    `logit_bias` shifts every logit alike and cannot change the loss; it is accepted as `clip_loss` accepts it.
    """
    check_label_smoothing(label_smoothing)
    all_images = all_gather_with_grad(image_emb, group)
    all_texts = all_gather_with_grad(text_emb, group)
    if not local_loss:
        all_ids = None if positive_ids is None else all_gather_no_grad(positive_ids, group)
        return clip_loss(all_images, all_texts, logit_scale, logit_bias, positive_ids=all_ids,
                         label_smoothing=label_smoothing)
    # clip_loss needs a square logit matrix, so the local rows are written out: the same targets, rows [B, N].
    matches = _local_matches(len(image_emb), positive_ids, group, image_emb.device).to(image_emb.dtype)
    targets = matches / matches.sum(dim=1, keepdim=True)
    if label_smoothing > 0:
        targets = (1 - label_smoothing) * targets + label_smoothing / targets.shape[1]
    image_logits = logit_scale * image_emb @ all_texts.T
    text_logits = logit_scale * text_emb @ all_images.T
    if logit_bias is not None:
        image_logits, text_logits = image_logits + logit_bias, text_logits + logit_bias
    image_to_text = -(targets * F.log_softmax(image_logits, dim=1)).sum(dim=1).mean()
    text_to_image = -(targets * F.log_softmax(text_logits, dim=1)).sum(dim=1).mean()
    return 0.5 * (image_to_text + text_to_image)


def distributed_siglip_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: torch.Tensor | float,
                            logit_bias: torch.Tensor | float, local_loss: bool = False, *,
                            positive_ids: torch.Tensor | None = None,
                            group: dist.ProcessGroup | None = None) -> torch.Tensor:
    """Sigmoid loss of the global batch from this rank's normalised embeddings [B, d], normalised as
    `siglip_loss` (sum over the N² pairs divided by N).

    local_loss=False: the value equals `siglip_loss` of the concatenated batch on every rank.
    local_loss=True: this rank's images against every rank's texts, summed and divided by B; the mean over
    ranks equals `siglip_loss` of the concatenated batch. In both modes the DDP-averaged gradients equal its
    gradients.
    """
    all_texts = all_gather_with_grad(text_emb, group)
    if not local_loss:
        all_images = all_gather_with_grad(image_emb, group)
        all_ids = None if positive_ids is None else all_gather_no_grad(positive_ids, group)
        return siglip_loss(all_images, all_texts, logit_scale, logit_bias, positive_ids=all_ids)
    # siglip_loss needs a square logit matrix, so the local rows are written out: the same sum, rows [B, N].
    logits = logit_scale * image_emb @ all_texts.T + logit_bias
    signs = _local_matches(len(image_emb), positive_ids, group, image_emb.device).to(logits.dtype) * 2 - 1
    return -F.logsigmoid(signs * logits).sum() / len(image_emb)
