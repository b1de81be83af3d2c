"""The options of a curation, checked once, and their fingerprint.

Every work file a stage writes carries the fingerprint, and every later stage checks it, so shards counted
on one machine with one set of options are never sampled with another: the stages of one curation must be
given the same options (the device and the number of report examples aside). The metadata enters the
fingerprint by its normalised entries, not its path, so a copy of the file on another machine is the same
curation.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from transferlab.curate.filters import CaptionFilter
from transferlab.curate.metadata import Metadata, read_metadata
from transferlab.errors import UserError

UNFINGERPRINTED = ("device", "examples")


@dataclass(frozen=True)
class Settings:
    """metadata: entries file (None: no balancing); cap: MetaCLIP's t; seed: of the balancing draws;
    caption_key: the member holding the caption; dedup: exact dedup; near_dup_model / score_model: model
    references (None: step off); score_keep: the fraction the score filter keeps; examples: removed pairs
    shown per reason in the report."""

    metadata: Path | None = None
    cap: int = 20_000
    seed: int = 0
    case_sensitive: bool = False
    caption_key: str = "txt"
    dedup: bool = True
    filters: CaptionFilter = field(default_factory=CaptionFilter)
    near_dup_model: str | None = None
    near_dup_threshold: float = 0.95
    score_model: str | None = None
    score_keep: float = 0.3
    device: str = "auto"
    examples: int = 4

    def __post_init__(self) -> None:
        if self.cap < 1:
            raise UserError(f"The balancing cap t must be a positive number of pairs per entry, got {self.cap}.")
        if not -1.0 <= self.near_dup_threshold <= 1.0:
            raise UserError(f"The near-duplicate threshold is a cosine similarity in [-1, 1], got "
                            f"{self.near_dup_threshold}; 0.95 is a common choice.")
        if not 0.0 < self.score_keep <= 1.0:
            raise UserError(f"The score filter keeps a fraction in (0, 1] of the pairs, got {self.score_keep}.")
        if not self.caption_key or "." in self.caption_key or "/" in self.caption_key:
            raise UserError(f"The caption key is a member extension such as 'txt', got {self.caption_key!r}.")
        if self.examples < 0:
            raise UserError(f"The number of examples per reason cannot be negative, got {self.examples}.")

    @cached_property
    def entries(self) -> Metadata | None:
        return None if self.metadata is None else read_metadata(self.metadata, self.case_sensitive)

    def describe(self) -> dict:
        """The options as JSON values."""
        described = dataclasses.asdict(self)
        described["metadata"] = None if self.metadata is None else str(self.metadata)
        return described

    @cached_property
    def fingerprint(self) -> str:
        options = {k: v for k, v in self.describe().items() if k not in UNFINGERPRINTED}
        options["metadata"] = None if self.entries is None else self.entries.fingerprint
        return hashlib.sha256(json.dumps(options, sort_keys=True).encode()).hexdigest()[:16]
