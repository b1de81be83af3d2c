"""Image↔text retrieval recall@k with several captions per image (Radford et al., 2021, Table 13).

Image i and caption j are scored by cosine similarity s_ij = x̂_i·t̂_j (both are normalised here); caption j
describes image g(j) = text_to_image[j], and every image needs at least one caption. Each ranked list is sorted by
score, descending, equal scores in ascending index order (what a stable argsort of -s gives), and a rank is a
0-based position in that list:

    text→image:  r_j = #{i' : s_i'j > s_g(j)j} + #{i' < g(j) : s_i'j = s_g(j)j}     over the N images
    image→text:  r_i = min_{j : g(j) = i} (position of caption j among the M captions for image i)

and recall@k is the fraction of queries with rank < k: a caption is a hit when its image is among the top k, an
image when ANY of its captions is. The keys follow LAION's CLIP_benchmark (metrics/zeroshot_retrieval.py), which
names a metric by what is retrieved: `image_retrieval_recall@k` is text→image, averaged over the M captions;
`text_retrieval_recall@k` is image→text, averaged over the N images.

Queries are processed batch_size at a time, each against the full other side ([batch_size, N or M] scores).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F


def retrieval_ranks(image_features, text_features, text_to_image,
                    batch_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """0-based ranks (image→text [N], text→image [M]) of the first correct item, as in the module docstring."""
    images = torch.as_tensor(image_features)
    images = F.normalize(images if images.is_floating_point() else images.float(), dim=1)
    texts = F.normalize(torch.as_tensor(text_features).to(images), dim=1)
    owner = torch.as_tensor(text_to_image, device=images.device).long()
    if owner.shape != (len(texts),) or len(owner) and (owner.min() < 0 or owner.max() >= len(images)):
        raise ValueError(f"text_to_image must hold one image index in [0, {len(images)}) per caption "
                         f"({len(texts)} captions), got shape {tuple(owner.shape)}")
    captionless = torch.bincount(owner, minlength=len(images)) == 0
    if captionless.any():
        raise ValueError(f"Every image needs a caption for image→text recall; {int(captionless.sum())} have none, "
                         f"the first is image {int(captionless.nonzero()[0])}.")

    image_positions = torch.arange(len(images), device=images.device)
    text_positions = torch.arange(len(texts), device=images.device)
    text_ranks = []
    for start in range(0, len(texts), batch_size):
        scores = texts[start:start + batch_size] @ images.T
        target = owner[start:start + batch_size, None]
        text_ranks.append(_rank(scores, scores.gather(1, target), image_positions < target))
    image_ranks = []
    for start in range(0, len(images), batch_size):
        scores = images[start:start + batch_size] @ texts.T
        own = owner[None, :] == image_positions[start:start + batch_size, None]
        # the image's best caption: highest score, then lowest index; no other caption of it can rank higher
        best = scores.masked_fill(~own, float("-inf")).amax(dim=1, keepdim=True)
        first = (own & (scores == best)).int().argmax(dim=1, keepdim=True)  # argmax returns the first maximum
        image_ranks.append(_rank(scores, best, text_positions < first))
    return torch.cat(image_ranks).cpu().numpy(), torch.cat(text_ranks).cpu().numpy()


def _rank(scores: torch.Tensor, target: torch.Tensor, before: torch.Tensor) -> torch.Tensor:
    """Items scoring above the target, plus items scoring the same at a lower index (`before` marks those)."""
    return (scores > target).sum(dim=1) + ((scores == target) & before).sum(dim=1)


def retrieval_recall(image_features, text_features, text_to_image, ks: Sequence[int] = (1, 5, 10),
                     batch_size: int = 1024) -> dict[str, float]:
    """{"text_retrieval_recall@k" (image→text), "image_retrieval_recall@k" (text→image), "mean_recall@k" (their
    mean)} for every k, in [0, 1]."""
    image_ranks, text_ranks = retrieval_ranks(image_features, text_features, text_to_image, batch_size)
    metrics = {f"text_retrieval_recall@{k}": float((image_ranks < k).mean()) for k in ks}
    metrics.update({f"image_retrieval_recall@{k}": float((text_ranks < k).mean()) for k in ks})
    for k in ks:  # DataComp's main retrieval metric at k = 1
        metrics[f"mean_recall@{k}"] = (metrics[f"text_retrieval_recall@{k}"]
                                       + metrics[f"image_retrieval_recall@{k}"]) / 2
    return metrics
