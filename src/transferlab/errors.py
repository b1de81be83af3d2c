"""The one exception type for bad user input.

Anything a user can fix (a config key, a file, a column, a model reference) raises `UserError` with a
one-paragraph message that names the file, line or key and says what to do. The CLI prints the message
and exits with status 2; everything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """Bad input that the user can fix; the message says what and how."""


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """' Did you mean 'x'?' for the closest choice, or '' when nothing is close."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" Did you mean '{close[0]}'?" if close else ""
