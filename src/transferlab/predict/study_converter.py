"""What the converters of published studies share: writing their runs as a CSV runs table, and their command line.

Each converter (`openclip_study`, `overtraining_study`) reads one study's published files into runs — one dict per
trained model, the columns `transferlab predict` reads — and is run as `python -m transferlab.predict.<study> FOLDER
OUT.csv [--data SERIES]`.
"""

from __future__ import annotations

import argparse
import csv
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from transferlab.errors import UserError


def write_runs(runs: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Write `runs` as a CSV runs table (columns in first-seen order; an absent value is an empty cell)."""
    path = Path(path)
    columns = list(dict.fromkeys(name for run in runs for name in run))
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, columns, restval="")
        writer.writeheader()
        writer.writerows({key: "" if value is None else value for key, value in run.items()} for run in runs)
    return path


def convert(argv: Sequence[str] | None, *, module: str, study: str, folder: str, series: Sequence[str],
            load_study: Callable[[Path], list[dict[str, Any]]]) -> None:
    """The command line of a converter: FOLDER (described by `folder`) to OUT.csv, optionally one `--data` series."""
    parser = argparse.ArgumentParser(prog=f"python -m transferlab.predict.{module}",
                                     description=f"Turn {study}'s published runs into a transferlab runs table.")
    parser.add_argument("folder", type=Path, help=folder)
    parser.add_argument("out", type=Path, help="the runs table to write (.csv)")
    parser.add_argument("--data", choices=series, help="keep the runs of one series (training data set) only")
    args = parser.parse_args(argv)
    try:
        runs = [run for run in load_study(args.folder) if args.data in (None, run["data"])]
        print(f"{len(runs)} runs -> {write_runs(runs, args.out)}")
    except UserError as error:
        parser.exit(2, f"error: {error}\n")
