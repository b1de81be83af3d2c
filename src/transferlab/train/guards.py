"""What keeps a long run from being lost: stop signals honoured at a step boundary, non-finite steps skipped.

- `StopSignals`: SIGTERM (what schedulers send before preemption) or SIGINT (Ctrl-C) during training lets
  the current step finish; the loop then writes a checkpoint and raises `transferlab.errors.Interrupted`. A
  second signal gets the handler that was there before (a second Ctrl-C stops at once; checkpoints stay
  whole anyway).
- `BadSteps`: a step whose loss or gradient norm is NaN or Inf is not applied (no optimizer, EMA or memory
  bank update) and is counted; `limit` such steps in a row raise `NonFiniteSteps` after a checkpoint,
  whose weights are still those from before the first bad step.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import torch

from transferlab.errors import UserError


class NonFiniteSteps(UserError):
    pass


class StopSignals:
    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():  # handlers can only be set there
            self._previous = {signum: signal.signal(signum, self._handle) for signum in self.SIGNALS}
        return self

    def _handle(self, signum: int, frame) -> None:
        self.received = signum
        signal.signal(signum, self._previous[signum])

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


class BadSteps:
    def __init__(self, limit: int, total: int = 0) -> None:
        self.limit, self.total, self.streak, self.first = limit, total, 0, None

    def ok(self, step: int, loss: torch.Tensor, grad_norm: torch.Tensor | None) -> bool:
        """Whether step `step` may be applied; counts it otherwise (one device sync)."""
        finite = torch.isfinite(loss) if grad_norm is None else torch.isfinite(loss) & torch.isfinite(grad_norm)
        if bool(finite):
            self.streak = 0
            return True
        self.total += 1
        self.streak += 1
        self.first = step if self.streak == 1 else self.first
        return False

    @property
    def exhausted(self) -> bool:
        return self.streak >= self.limit

    def error(self, checkpoint: Path) -> NonFiniteSteps:
        return NonFiniteSteps(
            f"Steps {self.first + 1} to {self.first + self.streak} all gave a NaN or Inf loss or gradient and were "
            f"skipped, so training stopped. {checkpoint} holds the weights from before step {self.first + 1}. "
            f"Lower train.lr, set train.grad_clip, use train.precision=fp32, or look for broken samples in the "
            f"data; then continue with --resume, or raise train.max_bad_steps to skip more.")
