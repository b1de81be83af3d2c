"""Contrastive and neighbourhood objectives; they know nothing of the training loop.

Every loss takes L2-normalised embeddings and, where it has one, the exponentiated logit scale, and comes as
a function plus an `nn.Module` wrapper.
"""

from transferlab.losses.clip import ClipLoss, clip_loss
from transferlab.losses.dcl import DCLLoss, dcl_loss
from transferlab.losses.distributed import distributed_clip_loss, distributed_siglip_loss
from transferlab.losses.look import NO_NEIGHBOUR_LOSS, LookLoss, look_loss
from transferlab.losses.siglip import SIGLIP_INIT_BIAS, SIGLIP_INIT_SCALE, SigLipLoss, siglip_init, siglip_loss
from transferlab.losses.supcon import NTXentLoss, SupConLoss, ntxent_loss, supcon_loss

__all__ = [
    "NO_NEIGHBOUR_LOSS",
    "SIGLIP_INIT_BIAS",
    "SIGLIP_INIT_SCALE",
    "ClipLoss",
    "DCLLoss",
    "LookLoss",
    "NTXentLoss",
    "SigLipLoss",
    "SupConLoss",
    "clip_loss",
    "dcl_loss",
    "distributed_clip_loss",
    "distributed_siglip_loss",
    "look_loss",
    "ntxent_loss",
    "siglip_init",
    "siglip_loss",
    "supcon_loss",
]
