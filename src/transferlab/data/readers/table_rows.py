"""Reading a CSV, TSV or JSON-lines table into rows, with the errors a user can act on.

Every row keeps the line it starts on, so a bad row is reported as `<file> line <n>`; malformed rows and
invalid JSON lines go through the dataset's bad-sample policy (error or skip-and-count).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from transferlab.data.report import BadSamples
from transferlab.errors import UserError, did_you_mean

TABLE_KINDS = {".csv": ",", ".tsv": "\t", ".jsonl": None}


@dataclass
class Table:
    path: Path
    dataset: str
    rows: list[tuple[int, dict]]  # (line the row starts on, column -> value)
    columns: list[str]
    repeated: set[str] = field(default_factory=set)  # columns the header names more than once

    @property
    def word(self) -> str:
        return "field" if self.path.suffix.lower() == ".jsonl" else "column"

    def require(self, column: str, key: str, what: str, alternative: str = "") -> None:
        """A UserError naming the table, the missing column, the closest existing one and the recipe key."""
        if column not in self.columns:
            word = self.word
            raise UserError(f"{self.path} has no {word} '{column}' for the {what}.{did_you_mean(column, self.columns)} "
                            f"Its {word}s are: {', '.join(self.columns) or '(none)'}. Set "
                            f"`datasets.{self.dataset}.{key}` to the {word} that holds the {what}, or rename it in "
                            f"the table{alternative}.")
        if column in self.repeated:
            raise UserError(f"{self.path} names the {self.word} '{column}' more than once in its header, so it is "
                            f"unclear which holds the {what}. Give each {self.word} its own name.")


def read_table(path: Path, dataset: str, bad: BadSamples) -> Table:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"The table {path} of dataset '{dataset}' does not exist. Check `datasets.{dataset}.table`; "
                        f"relative paths are resolved against the directory you run transferlab from.")
    kind = path.suffix.lower()
    if kind not in TABLE_KINDS:
        raise UserError(f"{path}: cannot read '{kind or 'no extension'}' tables. Use a .csv, .tsv or .jsonl file "
                        f"(one row per sample) for `datasets.{dataset}.table`.")
    text = _read_utf8(path)
    if kind == ".jsonl":
        rows, columns = _jsonl_records(text, path, bad)
    else:
        rows, columns = _csv_records(text, path, TABLE_KINDS[kind], bad)
    repeated = {column for column in columns if columns.count(column) > 1}
    return Table(path, dataset, rows, list(dict.fromkeys(columns)), repeated)


def _read_utf8(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise UserError(f"{path} line {line} is not valid UTF-8 (byte {data[err.start]:#04x}). Re-save the file as "
                        f"UTF-8 (spreadsheets: 'CSV UTF-8'; or `iconv -f latin1 -t utf-8`).") from None


@contextlib.contextmanager
def _field_limit(limit: int) -> Iterator[None]:
    """Let the csv module read fields up to `limit` characters (its default, 128 KiB, would make one long
    caption a parse error of the whole table; captions are truncated later). The limit is global: restore it."""
    old = csv.field_size_limit()
    csv.field_size_limit(max(old, limit))
    try:
        yield
    finally:
        csv.field_size_limit(old)


def _csv_records(text: str, table: Path, delimiter: str, bad: BadSamples) -> tuple[list[tuple[int, dict]], list[str]]:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    records = []
    try:
        with _field_limit(len(text) + 1):
            header = [column.strip() for column in next(reader, [])]
            if not any(header):
                raise UserError(f"{table} is empty. Its first line must name the columns, e.g. image,caption.")
            start = reader.line_num + 1
            for row in reader:
                # a quoted caption may span lines; messages name the line the row starts on
                line, start = start, reader.line_num + 1
                if not row:
                    continue
                if len(row) != len(header):
                    sep = "a tab" if delimiter == "\t" else f"'{delimiter}'"
                    bad("malformed row", f"{table} line {line}", f"the row has {len(row)} fields but the header "
                                                                 f"has {len(header)}; quote fields that contain {sep}")
                    continue
                records.append((line, dict(zip(header, row, strict=True))))
    except csv.Error as err:
        raise UserError(f"{table} line {reader.line_num} cannot be parsed ({err}). Fix the quoting on that line "
                        f"(a field with quotes or line breaks must be wrapped in double quotes).") from None
    return records, header


def _jsonl_records(text: str, table: Path, bad: BadSamples) -> tuple[list[tuple[int, dict]], list[str]]:
    records, fields = [], {}
    # split on '\n' only: JSON strings may legally hold U+2028 and friends, which str.splitlines breaks on
    for line, content in enumerate(text.split("\n"), 1):
        if not content.strip():
            continue
        try:
            record = json.loads(content)
        except (ValueError, RecursionError) as err:
            bad("invalid json", f"{table} line {line}", f"the line is not valid JSON ({err})")
            continue
        if not isinstance(record, dict):
            bad("invalid json", f"{table} line {line}", f"the line holds a JSON {type(record).__name__}, not an "
                                                        'object such as {"image": "a.png", "caption": "..."}')
            continue
        fields.update(dict.fromkeys(record))
        records.append((line, record))
    return records, list(fields)


