"""Contrastive objectives; they know nothing of the training loop."""

from transferlab.losses.clip import ClipLoss, clip_loss

__all__ = ["ClipLoss", "clip_loss"]
