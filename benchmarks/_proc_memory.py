"""Memory of a process tree, read from /proc (Linux), for the benchmarks that watch a run (stream_memory.py,
stream_scale.py) and for processes that measure themselves (benchmarks/_data_planes.py). Standard library only.

- RSS counts every page a process maps, so pages a forked worker still shares with its parent count twice
  in a sum over the tree; PSS (proportional set size, /proc/<pid>/smaps_rollup) splits each shared page among
  the processes sharing it, so the tree's summed PSS is what the tree holds.
- VmHWM is a process's own high-water RSS, kept by the kernel: its true peak, however briefly it lasted.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass

MIB = 2**20


def _status_bytes(pid: int, key: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            return next(int(line.split()[1]) * 1024 for line in status if line.startswith(key + ":"))
    except (OSError, StopIteration, ValueError):
        return None


def vmhwm(pid: int) -> int | None:
    """The process's peak RSS so far, in bytes (None once it is gone)."""
    return _status_bytes(pid, "VmHWM")


def rss_pss(pid: int) -> tuple[int, int] | None:
    """(RSS, PSS) of the process in bytes, None once it is gone."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as rollup:
            fields = dict(line.split()[:2] for line in rollup if line.startswith(("Rss:", "Pss:")))
        return int(fields["Rss:"]) * 1024, int(fields["Pss:"]) * 1024
    except (OSError, KeyError, ValueError):
        return None


def descendants(pid: int) -> list[int]:
    """Every living process below pid (children, their children, ...)."""
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{parent}/task/{task}/children") as children:
                    kids = [int(kid) for kid in children.read().split()]
            except OSError:
                continue
            found += kids
            todo += kids
    return found


def tree_pss(pid: int) -> int:
    """Summed PSS of pid and its descendants, in bytes."""
    return sum(m[1] for p in (pid, *descendants(pid)) if (m := rss_pss(p)) is not None)


@dataclass
class TreePeaks:
    """The peaks of a process tree's memory over the samples taken with `sample()`."""

    root: int
    tree_rss: int = 0
    tree_pss: int = 0
    main_hwm: int = 0
    largest_child_rss: int = 0
    processes: int = 0
    samples: int = 0

    def sample(self) -> None:
        rss = pss = 0
        tree = [self.root, *descendants(self.root)]
        for pid in tree:
            if (memory := rss_pss(pid)) is None:
                continue
            rss, pss = rss + memory[0], pss + memory[1]
            if pid != self.root:
                self.largest_child_rss = max(self.largest_child_rss, memory[0])
        self.main_hwm = max(self.main_hwm, vmhwm(self.root) or 0)
        self.tree_rss, self.tree_pss = max(self.tree_rss, rss), max(self.tree_pss, pss)
        self.processes, self.samples = max(self.processes, len(tree)), self.samples + 1

    def mib(self) -> dict:
        """The peaks in MiB, rounded, with the sample counts."""
        return {"peak_tree_rss_mib": round(self.tree_rss / MIB, 1), "peak_tree_pss_mib": round(self.tree_pss / MIB, 1),
                "main_vmhwm_mib": round(self.main_hwm / MIB, 1),
                "largest_worker_rss_mib": round(self.largest_child_rss / MIB, 1), "processes": self.processes,
                "samples": self.samples}


def watch(proc: subprocess.Popen, every: float = 0.1, tick: Callable[[], None] | None = None) -> TreePeaks:
    """Sample proc's tree every `every` seconds until it exits, calling `tick` after each sample; the peaks.
    The process is killed if watching stops early (an exception, Ctrl-C), so no run outlives its benchmark."""
    peaks = TreePeaks(proc.pid)
    try:
        while proc.poll() is None:
            peaks.sample()
            if tick is not None:
                tick()
            time.sleep(every)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return peaks
