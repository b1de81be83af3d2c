"""What a reader saw: `DataReport` (samples kept, samples skipped by reason, the decisions it took about the
layout) and `BadSamples` (the `bad_samples` policy: stop with the fix, or skip and count). The run's
data_report.json holds the reports; torch-free, so curation's workers and the tar room can use them."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

from transferlab.errors import UserError

log = logging.getLogger(__name__)


@dataclass
class DataReport:
    """What a reader saw: samples kept, samples skipped by reason, and the decisions it took about the
    layout (where class names came from, how captions were split), which are logged as well."""

    kept: int = 0
    skipped: Counter = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)

    def skip(self, reason: str) -> None:
        self.skipped[reason] += 1

    def note(self, text: str, warn: bool = True) -> None:
        """Record a decision; `warn` also shows it (one that may change results), else it is logged at info."""
        if text not in self.notes:
            self.notes.append(text)
            log.log(logging.WARNING if warn else logging.INFO, text)

    def to_dict(self) -> dict:
        return {"kept": self.kept, "skipped": dict(self.skipped), **({"notes": self.notes} if self.notes else {})}


class BadSamples:
    """The `bad_samples` policy: raise a UserError saying how to fix a bad sample, or count the skip.

    Calls return None, so a reader can `return bad(...)` from a function that otherwise returns a sample.
    """

    def __init__(self, name: str | None, mode: str, report: DataReport, unit: str) -> None:
        self.name, self.mode, self.report, self.unit = name, mode, report, unit

    def __call__(self, reason: str, where: str, detail: str, fix: str | None = None) -> None:
        if self.mode == "skip":
            self.report.skip(reason)
            return None
        key = f"datasets.{self.name}.bad_samples" if self.name else "bad_samples"
        raise UserError(f"{where}: {detail}. {fix or f'Fix or remove that {self.unit}'}, or set `{key}: skip` "
                        f"to skip such {self.unit}s and count them in the data report.")
