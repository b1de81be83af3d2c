"""Optimizers and learning-rate schedules; they know nothing of the training loop."""

from transferlab.optim.factory import build_optimizer, parameter_groups
from transferlab.optim.schedules import lr_at

__all__ = ["build_optimizer", "lr_at", "parameter_groups"]
