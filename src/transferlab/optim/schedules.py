"""Learning-rate schedules as pure functions of the step, so resuming needs no scheduler state.

Every schedule starts with a linear warmup from base_lr / warmup_steps to base_lr, then:

    constant           base_lr
    cosine             base_lr · ½(1 + cos(π·p)),  p = (step − warmup) / (total − warmup)
    constant_cooldown  base_lr until the last `cooldown_fraction` of the run, then down to 0 at total_steps,
                       linearly (1 − q) or as 1 − √q with `cooldown_shape="1-sqrt"`,
                       q = (step − cooldown start) / cooldown steps

constant_cooldown is the warmup-stable-decay schedule (Hu et al. 2024, MiniCPM; Hägele et al. 2024,
"Scaling Laws and Compute-Optimal Training Beyond Fixed Training Durations", who find 1 − √q slightly
better and 20% cooldown enough to match cosine): any checkpoint of the constant phase can be cooled
down into a finished model, so one run serves several training lengths. Warmup takes precedence if it
overlaps the cooldown.
"""

from __future__ import annotations

import math

SCHEDULES = ("constant", "cosine", "constant_cooldown")


def lr_at(step: int, base_lr: float, total_steps: int, warmup_steps: int, schedule: str,
          cooldown_fraction: float = 0.2, cooldown_shape: str = "linear") -> float:
    """The learning rate of 0-based `step`."""
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    if schedule == "constant":
        return base_lr
    if schedule == "cosine":
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return base_lr * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    if schedule == "constant_cooldown":
        if not 0 <= cooldown_fraction <= 1 or cooldown_shape not in ("linear", "1-sqrt"):
            raise ValueError(f"cooldown_fraction must lie in [0, 1] and cooldown_shape be 'linear' or '1-sqrt'; "
                             f"got {cooldown_fraction}, {cooldown_shape!r}")
        cooldown_steps = round(cooldown_fraction * total_steps)
        progress = (step - (total_steps - cooldown_steps)) / max(1, cooldown_steps)
        if progress <= 0:
            return base_lr
        progress = min(progress, 1.0)
        return base_lr * (1 - (progress if cooldown_shape == "linear" else math.sqrt(progress)))
    raise ValueError(f"unknown schedule {schedule!r}; expected one of {', '.join(SCHEDULES)}")
