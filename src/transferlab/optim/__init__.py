"""Optimizers, EMA, layer-wise lr decay and learning-rate schedules; they know nothing of the training loop."""

from transferlab.optim.eightbit import AdamW8bit, Lion8bit
from transferlab.optim.ema import ModelEMA
from transferlab.optim.factory import OPTIMIZERS, build_optimizer, create_optimizer, parameter_groups
from transferlab.optim.lamb import LAMB
from transferlab.optim.layer_decay import default_layer_of, layer_decay_groups
from transferlab.optim.lion import Lion
from transferlab.optim.schedules import SCHEDULES, lr_at

__all__ = ["LAMB", "OPTIMIZERS", "SCHEDULES", "AdamW8bit", "Lion", "Lion8bit", "ModelEMA", "build_optimizer",
           "create_optimizer", "default_layer_of", "layer_decay_groups", "lr_at", "parameter_groups"]
