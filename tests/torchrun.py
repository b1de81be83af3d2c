"""Launching torchrun from tests: two processes on this machine, one thread each."""

import os
import subprocess
import sys

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
CLI = ["-m", "transferlab"]  # after the torchrun arguments: the transferlab command in every process
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def torchrun(*args: str, processes: int = 2, timeout: int = 900) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc_per_node N args...`, which must succeed. Relaunched when gloo aborts a
    rank at process teardown ("terminate called"; rare, and after the work is done)."""
    command = [*TORCHRUN, "--nproc_per_node", str(processes), *args]
    for _ in range(3):
        process = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=timeout)
        if process.returncode == 0 or "terminate called" not in process.stdout + process.stderr:
            break
    assert process.returncode == 0, f"torchrun failed:\n{process.stdout[-3000:]}\n{process.stderr[-3000:]}"
    return process
