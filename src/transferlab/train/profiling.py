"""`--profile`: where a training step's time goes, written to `<run>/profile.txt` and printed.

The loop marks its phases (`profiler.phase(name)`, a `torch.profiler.record_function` that lasts until
the next phase or the step's end; nothing at all when not profiling): `data` (waiting for a streamed
set's loader workers to deliver the step's decoded images; nothing for in-memory data), `batch`
(making the step's batch: indexing, augmentation, captions), `gradients` (the objective's forward and
backward passes, chunked or not, and the gradient average across ranks), `optimizer` (clipping, the
optimizer step, EMA) and `log+checkpoint`. With `train.profile_steps: N` the profiler skips the first
`WARMUP` steps of the run (start-up, allocator warm-up), then records N steps; the report has the mean
wall time of each phase per step and the operators that took the most time.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function, schedule
from tqdm import tqdm

from transferlab.fileio import atomic_write

WARMUP = 3
PHASES = ("data", "batch", "gradients", "optimizer", "log+checkpoint")


class StepProfiler:
    """`with StepProfiler(...) as profiler:` around the loop, `profiler.phase(name)` as each phase of a step
    begins, `profiler.step()` after each step."""

    def __init__(self, run_dir: Path, steps: int | None, enabled: bool = True) -> None:
        self.run_dir, self.steps = Path(run_dir), steps
        self._profile, self._phase, self._count = None, None, 0
        if steps and enabled:
            activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
            self._profile = profile(activities=activities, on_trace_ready=self._report,
                                    schedule=schedule(wait=WARMUP, warmup=1, active=steps, repeat=1))

    def __enter__(self) -> StepProfiler:
        if self._profile is not None:
            self._profile.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._profile is not None:
            self._profile.__exit__(*exc)

    def phase(self, name: str) -> None:
        if self._profile is None:
            return
        self._close_phase()
        self._phase = record_function(name)
        self._phase.__enter__()

    def step(self) -> None:
        if self._profile is not None:
            self._close_phase()
            self._count += 1
            self._profile.step()

    def _close_phase(self) -> None:
        if self._phase is not None:
            self._phase.__exit__(None, None, None)
            self._phase = None

    def _report(self, prof) -> None:
        recorded = min(self.steps, self._count - WARMUP - 1)  # fewer when the run ended first
        if recorded < 1:
            tqdm.write(f"profile: the run ended before step {WARMUP + 2}; nothing was recorded.", file=sys.stderr)
            return
        averages = prof.key_averages()
        by_name = {event.key: event for event in averages}
        phases = {name: by_name[name].cpu_time_total / 1e3 / recorded for name in PHASES if name in by_name}
        total = sum(phases.values()) or 1.0
        lines = [f"transferlab profile: {recorded} steps after {WARMUP} warm-up steps (ms per step, wall time)",
                 ""] + [f"  {name:<16}{ms:10.2f} ms {100 * ms / total:6.1f}%" for name, ms in phases.items()]
        lines += [f"  {'step':<16}{total:10.2f} ms", "", "operators by self CPU time (all recorded steps):",
                  averages.table(sort_by="self_cpu_time_total", row_limit=15)]
        text = "\n".join(lines) + "\n"
        atomic_write(self.run_dir / "profile.txt", text)
        tqdm.write(text, file=sys.stderr)
