"""What keeps a long run from being lost: stop signals honoured at a step boundary, non-finite steps skipped.

- `StopSignals`: SIGTERM (what schedulers send before preemption) or SIGINT (Ctrl-C) during training lets
  the current step finish; the loop then writes a checkpoint and raises `transferlab.errors.Interrupted`. A
  second signal gets the handler that was there before (a second Ctrl-C stops at once; checkpoints stay
  whole anyway).
- `BadSteps`: a step whose loss or gradient norm is NaN or Inf is not applied (no optimizer, EMA or memory
  bank update) and is counted; `limit` such steps in a row raise `NonFiniteSteps` after a checkpoint,
  whose weights are still those from before the first bad step. The decision is a device tensor and the
  counts stay on the device until the loop reads them at a log or checkpoint step (`read`), so judging a
  step makes the host wait for nothing; the steps between the limit and that read are not applied either.
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
    """Which steps may be applied, and the bad ones counted: `total` (all steps not applied), `streak` (bad steps in a
    row, up to the limit), `first` (the 0-based step that began it) and `exhausted`, as of the last `read()`."""

    def __init__(self, limit: int, total: int = 0) -> None:
        self.limit, self.total, self.streak, self.first, self.exhausted = limit, total, 0, None, False
        self._counts: torch.Tensor | None = None  # on the device: total, streak, first (-1: none), exhausted

    def judge(self, step: int, loss: torch.Tensor, grad_norm: torch.Tensor | None) -> torch.Tensor:
        """Whether step `step` may be applied: a bool tensor on the loss's device, computed there."""
        finite = torch.isfinite(loss) if grad_norm is None else torch.isfinite(loss) & torch.isfinite(grad_norm)
        counts = self._counts
        if counts is None:
            counts = torch.tensor([self.total, self.streak, -1 if self.first is None else self.first,
                                   int(self.exhausted)], device=loss.device)
        exhausted = counts[3] > 0
        applied = finite & ~exhausted
        streak = torch.where(exhausted, counts[1], torch.where(finite, 0, counts[1] + 1))
        first = torch.where(~exhausted & ~finite & (streak == 1), step, counts[2])
        self._counts = torch.stack([counts[0] + (~applied).long(), streak, first,
                                    (exhausted | (streak >= self.limit)).long()])
        return applied

    def read(self) -> None:
        """Bring the counts to the host (one wait for the device; the loop does it at log and checkpoint steps)."""
        if self._counts is not None:
            self.total, self.streak, first, exhausted = self._counts.tolist()
            self.first, self.exhausted = (None if first < 0 else first), bool(exhausted)

    def error(self, checkpoint: Path) -> NonFiniteSteps:
        return NonFiniteSteps(
            f"Steps {self.first + 1} to {self.first + self.streak} all gave a NaN or Inf loss or gradient and were "
            f"skipped, so training stopped. {checkpoint} holds the weights from before step {self.first + 1}. "
            f"Lower train.lr, set train.grad_clip, use train.precision=fp32, or look for broken samples in the "
            f"data; then continue with --resume, or raise train.max_bad_steps to skip more.")
