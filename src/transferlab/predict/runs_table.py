"""Tables of training runs to fit scaling laws on: one run per row, in CSV, TSV or JSON lines.

A run is a dict from column name to a float (a number), a string (anything else) or None (an empty cell).
In a CSV or TSV a column is numeric when every non-empty cell in it parses as a float (so a column of run ids such
as "007" and "a12" stays text); a JSON-lines table keeps JSON's own types, with every number read as a float.
Runs are numbered from 1 in file order in every message, so "run 3" is the third data row.

`append_run` adds one run to a JSON-lines table with one write to a file opened in append mode (O_APPEND: the
bytes land at the end of the file, whoever else appends), then flush and fsync, so a crash loses at most the line
being written; a line cut short by an earlier crash is closed with a newline first, and `load_runs` names it.
"""

from __future__ import annotations

import csv
import difflib
import io
import json
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from transferlab.errors import UserError
from transferlab.fileio import fsync_dir

DELIMITERS = {".csv": ",", ".tsv": "\t"}
SUFFIXES = (".csv", ".tsv", ".jsonl")
EXAMPLE_LINE = '{"N": 1.2e8, "D": 2.4e9, "loss": 3.1}'


def load_runs(path: str | Path) -> list[dict[str, Any]]:
    """The runs of a .csv, .tsv or .jsonl table, one dict per row, in file order."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise UserError(f"Cannot tell the format of the runs table {path} from its extension '{path.suffix}'. "
                        f"Give a .csv or .tsv file (a header line, then one run per line) or a .jsonl file (one "
                        f"JSON object per line), and rename the file to match its content.")
    text = _read_text(path)
    runs = _parse_jsonl(text, path) if suffix == ".jsonl" else _parse_delimited(text, path, DELIMITERS[suffix])
    if not runs:
        raise UserError(f"The runs table {path} holds no runs. Add one row per training run (for a .csv/.tsv a "
                        f"header line naming the columns, then one line per run; for a .jsonl one object per "
                        f"line such as {EXAMPLE_LINE}).")
    return runs


def require_columns(runs: Sequence[dict[str, Any]], columns: Iterable[str], path: str | Path) -> None:
    """Raise a UserError naming every column of `columns` that no run of `runs` (read from `path`) has."""
    present = list(dict.fromkeys(name for run in runs for name in run))
    missing = [name for name in columns if name not in present]
    if not missing:
        return
    described = ", ".join(f"'{name}'{_close_hint(name, present)}" for name in missing)
    raise UserError(f"The runs table {path} has no column {described}, which this fit needs. Its columns are: "
                    f"{', '.join(repr(name) for name in present) or 'none'}. Rename the columns in the file, or name "
                    f"the columns it has instead.")


def select_runs(runs: Sequence[dict[str, Any]], where: Iterable[str], path: str | Path) -> list[dict[str, Any]]:
    """The runs whose columns hold every `COLUMN=VALUE` of `where` (a number matches a number of the same value, so
    `multiplier=20` matches 20.0; anything else matches as text). A UserError names a malformed condition, a column
    no run has, or a condition no run meets with the values the column holds."""
    selected = list(runs)
    for condition in where:
        column, sep, wanted = condition.partition("=")
        column, wanted = column.strip(), wanted.strip()
        if not sep or not column:
            raise UserError(f"--where '{condition}' is not COLUMN=VALUE; write e.g. --where data=rpj.")
        require_columns(runs, [column], path)
        kept = [run for run in selected if _matches(run.get(column), wanted)]
        if not kept:
            held = list(dict.fromkeys(str(run.get(column)) for run in selected))
            shown = ", ".join(held[:20]) + (", ..." if len(held) > 20 else "")
            raise UserError(f"No run of {path} left has {column}={wanted}; the {len(selected)} run(s) before this "
                            f"condition hold {column} = {shown}.")
        selected = kept
    return selected


def numeric_column(runs: Sequence[dict[str, Any]], name: str, path: str | Path) -> np.ndarray:
    """Column `name` of every run as a float array; a UserError names the first run without a finite number."""
    require_columns(runs, [name], path)
    values = np.empty(len(runs))
    for index, run in enumerate(runs):
        value = run.get(name)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            shown = "no value" if value is None else repr(value)
            raise UserError(f"{run_label(run, index, capital=True)} of the runs table {path} has {shown} in column "
                            f"'{name}', which must be a finite number in every run. Fill it in, or remove the run "
                            f"from the table.")
        values[index] = value
    return values


def run_label(run: dict[str, Any], index: int, capital: bool = False) -> str:
    """How messages name the run at position `index` (from 0): "run 3 ('vit-b-32')", or "run 3" without a name."""
    name = run.get("run")
    label = f"{'R' if capital else 'r'}un {index + 1}"
    return label if name is None else f"{label} ('{name}')"


def append_run(path: str | Path, record: dict[str, Any]) -> Path:
    """Append `record` as one JSON line to the .jsonl table at `path`, creating the file (and its folder)."""
    path = Path(path)
    if path.suffix.lower() != ".jsonl":
        raise UserError(f"Runs are appended to a JSON-lines table, but {path} does not end in .jsonl. Give a path "
                        f"ending in .jsonl (load_runs reads .csv and .tsv tables too, but only .jsonl grows a line "
                        f"at a time).")
    if not isinstance(record, dict):
        raise TypeError(f"append_run takes a dict, not {type(record).__name__}")
    line = json.dumps(record, default=_jsonable, ensure_ascii=False) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    created = not path.exists()
    data = (("\n" if _ends_mid_line(path) else "") + line).encode("utf-8")
    with open(path, "ab") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    if created:
        fsync_dir(path.parent)
    return path


def _matches(value: Any, wanted: str) -> bool:
    number = _float(wanted)
    if number is not None and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value) == number
    return value is not None and str(value) == wanted


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise UserError(f"The runs table {path} does not exist. Check the path (relative paths start from "
                        f"{Path.cwd()}).") from None
    except UnicodeDecodeError as error:
        raise UserError(f"The runs table {path} is not UTF-8 text (byte {error.start} cannot be decoded). Save it "
                        f"as UTF-8 CSV/TSV or JSON lines.") from None
    except OSError as error:
        raise UserError(f"Cannot read the runs table {path}: {error.strerror or error}. Check that it is a "
                        f"readable file.") from None


def _parse_jsonl(text: str, path: Path) -> list[dict[str, Any]]:
    runs = []
    for number, line in enumerate(text.split("\n"), start=1):
        if line.strip():
            runs.append(_json_run(line, number, path))
    return runs


def _json_run(line: str, number: int, path: Path) -> dict[str, Any]:
    try:
        value = json.loads(line)
    except json.JSONDecodeError as error:
        raise UserError(f"Line {number} of the runs table {path} is not valid JSON ({error.msg} at column "
                        f"{error.colno}). Each line of a .jsonl table must be one JSON object such as "
                        f"{EXAMPLE_LINE}; fix or delete line {number}.") from None
    if not isinstance(value, dict):
        raise UserError(f"Line {number} of the runs table {path} is a JSON {type(value).__name__}, not an object. "
                        f"Each line of a .jsonl table must be one JSON object such as {EXAMPLE_LINE}; fix or "
                        f"delete line {number}.")
    return {str(key): _json_cell(cell) for key, cell in value.items()}


def _json_cell(cell: Any) -> Any:
    if isinstance(cell, bool):
        return cell
    if isinstance(cell, int | float):
        return float(cell)
    return None if cell == "" else cell


def _parse_delimited(text: str, path: Path, delimiter: str) -> list[dict[str, Any]]:
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    header: list[str] | None = None
    rows: list[list[str]] = []
    try:
        for cells in reader:
            if not any(cell.strip() for cell in cells):
                continue
            if header is None:
                header = _header(cells, path)
            else:
                rows.append(_cells(cells, header, reader.line_num, path))
    except csv.Error as error:
        raise UserError(f"Line {reader.line_num} of the runs table {path} cannot be parsed: {error}. Fix the "
                        f"quoting on that line.") from None
    return _typed_rows(header or [], rows)


def _header(cells: list[str], path: Path) -> list[str]:
    names = [cell.strip() for cell in cells]
    for index, name in enumerate(names):
        if not name:
            raise UserError(f"Column {index + 1} of the header line of the runs table {path} has no name. Name "
                            f"every column in the first line.")
        if name in names[:index]:
            raise UserError(f"The header line of the runs table {path} names column '{name}' twice. Give every "
                            f"column a distinct name.")
    return names


def _cells(cells: list[str], header: list[str], line: int, path: Path) -> list[str]:
    if len(cells) > len(header):
        raise UserError(f"Line {line} of the runs table {path} has {len(cells)} cells but the header names "
                        f"{len(header)} columns. Remove the extra cells or name their columns in the header "
                        f"(a cell holding the delimiter must be quoted).")
    return [cell.strip() for cell in cells] + [""] * (len(header) - len(cells))


def _typed_rows(header: list[str], rows: list[list[str]]) -> list[dict[str, Any]]:
    columns = [_typed_column([row[index] for row in rows]) for index in range(len(header))]
    return [dict(zip(header, values, strict=True)) for values in zip(*columns, strict=True)] if rows else []


def _typed_column(cells: list[str]) -> list[Any]:
    numbers = [_float(cell) for cell in cells]
    numeric = all(number is not None or cell == "" for cell, number in zip(cells, numbers, strict=True))
    if numeric:
        return numbers
    return [cell or None for cell in cells]


def _float(cell: str) -> float | None:
    try:
        return float(cell)
    except ValueError:
        return None


def _close_hint(name: str, present: list[str]) -> str:
    same_but_case = [column for column in present if column.lower() == name.lower()]
    close = same_but_case or difflib.get_close_matches(name, present, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _ends_mid_line(path: Path) -> bool:
    """Whether `path` exists and its last byte is not a newline (a line cut short by a crash)."""
    try:
        with open(path, "rb") as handle:
            if handle.seek(0, os.SEEK_END) == 0:
                return False
            handle.seek(-1, os.SEEK_END)
            return handle.read(1) != b"\n"
    except FileNotFoundError:
        return False


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"append_run cannot write a {type(value).__name__} as JSON")
