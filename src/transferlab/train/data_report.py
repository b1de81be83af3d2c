"""data_report.json of a training run: what the reader of each training dataset kept and skipped, by reason (the
whole dataset, before the split), and, for streamed data, the samples skipped (and replaced) while training."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tqdm import tqdm

from transferlab.fileio import atomic_write

STREAM_REPORT = "training_stream"  # data_report.json's entry for samples skipped while streaming


def record_data_reports(run_dir: Path, reports: dict, streamed: dict[str, int] | None = None) -> None:
    """Write data_report.json: the readers' `reports` and, at a checkpoint of streamed data, the samples skipped
    while training, by reason (`streamed`). When training begins (no `streamed`), each reader's skips are said
    on the console too."""
    content = {name: report.to_dict() for name, report in reports.items()}
    if streamed is not None:
        content[STREAM_REPORT] = {"skipped": streamed}
    atomic_write(run_dir / "data_report.json", json.dumps(content, indent=1) + "\n")
    if streamed is not None:
        return  # the readers' skips were reported when training began
    for name, report in reports.items():
        if report.skipped:
            reasons = ", ".join(f"{count} {reason}" for reason, count in report.skipped.most_common())
            tqdm.write(f"data: '{name}' kept {report.kept} samples and skipped {sum(report.skipped.values())} "
                       f"({reasons}); see {run_dir / 'data_report.json'}", file=sys.stderr)
