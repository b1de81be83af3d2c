"""Stage 4, `report`: what the curation did, gathered from the work files of every shard.

Writes into `<out>`:
    curation.json      pairs read and kept, pairs removed per reason and per step, what the tar reader
                       skipped (corrupt shards, unsafe members), the metadata file's skipped lines, per-shard
                       totals, and examples of removed pairs
    entry_counts.tsv   per metadata entry: the pairs matching it before balancing and after (with metadata)
    report.html        the same with plots (see `page.py`)
Every pair read is counted exactly once: kept, or removed for one reason.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime
from pathlib import Path

import numpy as np

from transferlab.curate import page, workfiles
from transferlab.curate.reasons import KEPT, REASONS, STEPS
from transferlab.curate.settings import Settings
from transferlab.errors import UserError
from transferlab.fileio import atomic_write

SHOWN_DUPLICATES = 20  # duplicate metadata lines listed by line number in curation.json


def report(shards: list[Path], out: Path, settings: Settings) -> dict:
    """Write curation.json, entry_counts.tsv and report.html; return the curation.json record."""
    reporter = Reporter(shards, out, settings)
    for shard in shards:
        reporter.read(shard)
    return reporter.finish()


class Reporter:
    """The report in two steps: `read` each shard's sample file, in pool order (as the sample stage finishes
    them, when one process runs both), then `finish`: the totals and the three files."""

    def __init__(self, shards: list[Path], out: Path, settings: Settings) -> None:
        self.shards, self.out, self.settings = shards, Path(out), settings
        planned, plan_info = workfiles.load(workfiles.path(out, "plan"), settings.fingerprint, "plan", ("counts",))
        names = [shard.name for shard in shards]
        if names != plan_info["shards"]:
            raise UserError(f"The pool given to --stage report ({len(names)} shards) is not the pool planned in "
                            f"{workfiles.path(out, 'plan')} ({len(plan_info['shards'])} shards). Give the same POOL.")
        self.before = planned["counts"]
        self.after = np.zeros_like(self.before)
        self.removed, self.skipped, self.examples, self.per_shard, self.corrupt = Counter(), Counter(), {}, [], []

    def read(self, shard: Path) -> None:
        file = workfiles.path(self.out, "sample", shard)
        sampled, info = workfiles.load(file, self.settings.fingerprint, "sample")
        status = sampled["status"]
        codes = np.bincount(status, minlength=len(REASONS) + 1)
        self.removed.update({reason: int(codes[code]) for code, reason in enumerate(REASONS, 1) if codes[code]})
        self.skipped.update(info["skipped"])
        if info["skipped"].get("corrupt shard"):
            self.corrupt.append(shard.name)
        for reason, found in info["examples"].items():
            shown = self.examples.setdefault(reason, [])
            shown.extend(found[:self.settings.examples - len(shown)])
        self.per_shard.append({"shard": shard.name, "output": info["output"], "pairs": int(len(status)),
                               "kept": int(codes[KEPT])})
        if self.settings.entries is not None:
            if "entry_ids" not in sampled:
                raise UserError(f"{file} was written by an older transferlab. Delete it and run --stage sample on "
                                f"{shard.name} again.")
            self.after[sampled["entry_ids"]] += sampled["entry_counts"]

    def finish(self) -> dict:
        settings, entries, before, after, removed = self.settings, self.settings.entries, self.before, self.after, \
            self.removed
        examples = {reason: self.examples[reason] for reason in REASONS if reason in self.examples}
        record = {
            "created": datetime.now().isoformat(timespec="seconds"), "pool": [shard.name for shard in self.shards],
            "out": str(self.out), "settings": settings.describe(), "fingerprint": settings.fingerprint,
            "pairs": sum(s["pairs"] for s in self.per_shard), "kept": sum(s["kept"] for s in self.per_shard),
            "removed": {reason: removed[reason] for reason in REASONS if removed[reason]},
            "removed_by_step": {step: n for step in STEPS if (n := sum(removed[r] for r in STEPS[step]))},
            "tar_skips": dict(self.skipped), "corrupt_shards": self.corrupt,
            "metadata": _metadata(settings, before, after), "shards": self.per_shard,
            "examples": {reason: [{k: v for k, v in e.items() if k != "image"} for e in found]
                         for reason, found in examples.items()},
        }
        atomic_write(self.out / "curation.json", json.dumps(record, indent=1, ensure_ascii=False) + "\n")
        if entries is not None:
            names = "\n".join(entries.entries).replace("\t", " ").split("\n")  # an entry is one line, tabs spaced
            rows = map("\t".join, zip(names, map(str, before.tolist()), map(str, after.tolist()), strict=True))
            atomic_write(self.out / "entry_counts.tsv", "entry\tbefore\tafter\n" + "\n".join(rows) + "\n")
        page.write_page(self.out / "report.html", record, before, after, settings.cap if entries is not None else None,
                        examples)
        return record


def _metadata(settings: Settings, before: np.ndarray, after: np.ndarray) -> dict | None:
    entries = settings.entries
    if entries is None:
        return None
    return {"file": str(entries.path), "entries": len(entries.entries), "blank_lines": entries.blank_lines,
            "duplicate_lines": len(entries.duplicates),
            "duplicates": [{"line": line, "repeats_line": first, "entry": entry}
                           for line, first, entry in entries.duplicates[:SHOWN_DUPLICATES]],
            "cap": settings.cap, "entries_matched_before": int((before > 0).sum()),
            "entries_matched_after": int((after > 0).sum()), "entries_over_cap": int((before > settings.cap).sum())}
