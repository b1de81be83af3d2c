"""`ModelEMA`: an exponential moving average of a model's weights, for evaluation.

After each optimizer step, every trainable parameter and floating-point buffer is averaged

    θ̄ ← d·θ̄ + (1 − d)·θ,    d = min(decay, (1 + n) / (10 + n)) with warmup, else decay,

where n is the number of updates before this one (so the first update has d = 0.1 with warmup). The
warmup, that of TensorFlow's ExponentialMovingAverage(num_updates=...), keeps the average from being
dominated by the random initialisation in short runs. Integer buffers (BatchNorm's
num_batches_tracked) are copied, not averaged. Frozen parameters never change, so they are not tracked.
Averages of float16/bfloat16 tensors are kept in float32: with decay 0.9999 a bf16 average could never
move (its 8-bit mantissa cannot represent a 1e-4 relative change).

    ema = ModelEMA(model, decay=0.999)
    ...  optimizer.step(); ema.update(model)
    with ema.applied(model):          # EMA weights in the model, the training weights restored after
        evaluate(model)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


def _tracked(model: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    yield from ((name, p) for name, p in model.named_parameters() if p.requires_grad)
    yield from model.named_buffers()


class ModelEMA:
    def __init__(self, model: nn.Module, decay: float = 0.9999, warmup: bool = True) -> None:
        if not 0 <= decay <= 1:
            raise ValueError(f"decay must lie in [0, 1]; got {decay}")
        self.decay, self.warmup = decay, warmup
        self.updates = 0
        self.shadow = {name: self._copy(value) for name, value in _tracked(model)}

    @staticmethod
    def _copy(value: torch.Tensor) -> torch.Tensor:
        low_precision = value.dtype in (torch.float16, torch.bfloat16)
        return value.detach().to(torch.float32 if low_precision else value.dtype, copy=True)

    def current_decay(self) -> float:
        """The d of the next update."""
        if self.warmup:
            return min(self.decay, (1 + self.updates) / (10 + self.updates))
        return self.decay

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """One multi-tensor lerp over the floating-point averages (one kernel launch on a GPU); integers copied."""
        averages, values = [], []
        for name, value in _tracked(model):
            average = self.shadow[name]
            if average.is_floating_point():
                averages.append(average)
                values.append(value.to(average.dtype))
            else:
                average.copy_(value)
        if averages:
            torch._foreach_lerp_(averages, values, 1 - self.current_decay())
        self.updates += 1

    @torch.no_grad()
    def apply_to(self, model: nn.Module) -> None:
        """Copy the averages into the model's parameters and buffers."""
        for name, value in _tracked(model):
            value.copy_(self.shadow[name])

    @contextmanager
    def applied(self, model: nn.Module) -> Iterator[nn.Module]:
        """The model with EMA weights inside the block, its own weights restored on exit."""
        backup = {name: value.detach().clone() for name, value in _tracked(model)}
        self.apply_to(model)
        try:
            yield model
        finally:
            with torch.no_grad():
                for name, value in _tracked(model):
                    value.copy_(backup[name])

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Flat tensors (safetensors-ready): `updates` and `shadow.<name>` per tracked tensor."""
        return {"updates": torch.tensor(self.updates, dtype=torch.int64),
                **{f"shadow.{name}": value for name, value in self.shadow.items()}}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        shadow = {key.removeprefix("shadow."): value for key, value in state.items() if key.startswith("shadow.")}
        missing, unexpected = sorted(set(self.shadow) - set(shadow)), sorted(set(shadow) - set(self.shadow))
        if missing or unexpected or "updates" not in state:
            raise ValueError(f"EMA state does not fit this model: missing {missing[:5]}, unexpected "
                             f"{unexpected[:5]}" + ("" if "updates" in state else ", no 'updates'"))
        for name, value in shadow.items():
            self.shadow[name].copy_(value)
        self.updates = int(state["updates"])
