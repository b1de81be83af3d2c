"""The exceptions a user sees as messages, not tracebacks.

Anything a user can fix (a config key, a file, a column, a model reference) raises `UserError` with a
one-paragraph message that names the file, line or key and says what to do. The CLI prints the message
and exits with status 2. `Interrupted` is a run stopped by a signal after a checkpoint (status 128 + the
signal's number, as a shell reports it). Everything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import difflib
import signal
from collections.abc import Iterable
from pathlib import Path


class UserError(Exception):
    """Bad input that the user can fix; the message says what and how."""


class Interrupted(Exception):
    """Training stopped by SIGTERM or SIGINT at a step boundary, with a complete checkpoint."""

    def __init__(self, signum: int, step: int, checkpoint: Path) -> None:
        self.signum, self.step, self.checkpoint = signum, step, checkpoint
        super().__init__(f"Stopped by {signal.Signals(signum).name} after step {step}; checkpoint {checkpoint} "
                         f"is complete. Continue with the same --out and --resume.")


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """' Did you mean 'x'?' for the closest choice, or '' when nothing is close."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" Did you mean '{close[0]}'?" if close else ""
