"""Read a folder of images listed in a CSV, TSV or JSON-lines table into an in-memory `ImageTextData`.

Each row names one image (relative to the images folder), its caption and optionally a class label.
Rows naming the same image merge into one sample with several captions, which is how caption datasets
such as COCO list five captions per image. A bad row either stops the read with a `UserError` naming the
file, line and fix, or is skipped and counted in the data report, as `bad_samples` says; images are never
read from outside the images folder.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from transferlab.config import FolderSource
from transferlab.data.dataset import DataReport, ImageTextData
from transferlab.data.images import BadImage, decode_image
from transferlab.data.samples import BadSamples, Sample, assemble, check_fits, clean_captions, progress
from transferlab.errors import UserError, did_you_mean

TABLE_KINDS = {".csv": ",", ".tsv": "\t", ".jsonl": None}


def read_folder(spec: FolderSource, name: str, size: int, channels: int) -> ImageTextData:
    """Read the images and captions listed in `spec.table` into memory, decoded to [C, size, size]."""
    table = Path(spec.table)
    root = Path(spec.images or table.parent).resolve()
    if not table.is_file():
        raise UserError(f"The table {table} of dataset '{name}' does not exist. Check `datasets.{name}.table`; "
                        f"relative paths are resolved against the directory you run transferlab from.")
    kind = table.suffix.lower()
    if kind not in TABLE_KINDS:
        raise UserError(f"{table}: cannot read '{kind or 'no extension'}' tables. Use a .csv, .tsv or .jsonl file "
                        f"(one row per image) for `datasets.{name}.table`.")
    templated = bool(spec.templates) and spec.label_column is not None
    if spec.caption_column is None and not templated:
        raise UserError(f"Dataset '{name}' has no captions: set `datasets.{name}.caption_column` to the column that "
                        f"holds them, or set `datasets.{name}.label_column` and `datasets.{name}.templates` (e.g. "
                        f"['a photo of a {{}}.']) to make captions from class names.")
    bad = BadSamples(name, spec.bad_samples, DataReport(), "row")
    text = _read_utf8(table)
    if kind == ".jsonl":
        records, columns = _jsonl_records(text, table, bad)
    else:
        records, columns = _csv_records(text, table, TABLE_KINDS[kind], bad)
    word = "field" if kind == ".jsonl" else "column"

    def require(column: str, key: str, what: str, alternative: str = "") -> None:
        if column not in columns:
            raise UserError(f"{table} has no {word} '{column}' for the {what}.{did_you_mean(column, columns)} "
                            f"Its {word}s are: {', '.join(columns) or '(none)'}. Set `datasets.{name}.{key}` to "
                            f"the {word} that holds the {what}, or rename it in the table{alternative}.")

    require(spec.image_column, "image_column", "image paths")
    if spec.label_column:
        require(spec.label_column, "label_column", "class labels")
    caption_column = spec.caption_column
    if caption_column is not None and caption_column not in columns:
        if not templated:
            require(caption_column, "caption_column", "captions",
                    f"; or set `datasets.{name}.label_column` and `datasets.{name}.templates` to make captions "
                    f"from class names")
        caption_column = None  # the default column is absent: captions come from the templates

    rows: dict[Path, tuple[int, str, list[str], str | None]] = {}
    for line, record in records:
        where = f"{table} line {line}"
        parsed = _parse_row(record, where, spec, caption_column, templated, root, bad)
        if parsed is None:
            continue
        path, raw, captions, label = parsed
        if path not in rows:
            rows[path] = (line, raw, captions, label)
        elif rows[path][3] != label:
            bad("conflicting labels", where, f"image '{raw}' has label '{label}' here but '{rows[path][3]}' on "
                                             f"line {rows[path][0]}")
        else:
            rows[path][2].extend(captions)

    check_fits(len(rows), channels, size, name, str(table))
    samples = []
    for path, (line, raw, captions, label) in progress(rows.items(), table.name, len(rows)):
        where = f"{table} line {line}"
        if not path.is_file():
            bad("missing image", where, f"image '{raw}' does not exist (looked for {path})")
            continue
        try:
            samples.append(Sample(decode_image(path, size, channels), captions, label, where))
        except BadImage as err:
            bad("undecodable image", where, f"image '{raw}' cannot be decoded: {err}")
    return assemble(name, str(table), samples, bad, spec.templates, spec.label_column is not None)


def _read_utf8(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise UserError(f"{path} line {line} is not valid UTF-8 (byte {data[err.start]:#04x}). Re-save the file as "
                        f"UTF-8 (spreadsheets: 'CSV UTF-8'; or `iconv -f latin1 -t utf-8`).") from None


def _csv_records(text: str, table: Path, delimiter: str, bad: BadSamples) -> tuple[list[tuple[int, dict]], list[str]]:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    records = []
    try:
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
                bad("malformed row", f"{table} line {line}", f"the row has {len(row)} fields but the header has "
                                                             f"{len(header)}; quote fields that contain {sep}")
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


def _parse_row(record: dict, where: str, spec: FolderSource, caption_column: str | None, templated: bool,
               root: Path, bad: BadSamples) -> tuple[Path, str, list[str], str | None] | None:
    raw = record.get(spec.image_column)
    if not isinstance(raw, str) or not raw.strip():
        return bad("missing image path", where, f"no image path in '{spec.image_column}'")
    raw = raw.strip()
    path = _inside(root, raw)
    if path is None:
        return bad("path outside the image folder", where,
                   f"image path '{raw}' is outside the image folder {root}; only paths relative to it, "
                   f"without '..', are read", fix="Move the image into the folder and fix the path")
    label = None
    if spec.label_column:
        value = record.get(spec.label_column)
        if isinstance(value, bool) or not isinstance(value, (str, int, type(None))):
            return bad("invalid label", where, f"the label {value!r} is not a class name or integer")
        label = "" if value is None else str(value).strip()
        if not label:
            return bad("missing label", where, f"no label in '{spec.label_column}'")
    captions = clean_captions(record.get(caption_column)) if caption_column else []
    if captions is None:
        return bad("invalid caption", where, f"'{caption_column}' must be a string or a list of strings")
    if not captions and not templated:
        return bad("empty caption", where, f"the caption of image '{raw}' in '{caption_column}' is empty")
    return path, raw, captions, label


def _inside(root: Path, raw: str) -> Path | None:
    """The resolved image path, or None when it is absolute or leads (via '..' or symlinks) out of root."""
    relative = Path(raw)
    if relative.is_absolute() or relative.drive:
        return None
    try:
        path = (root / relative).resolve()
    except (OSError, ValueError):  # NUL bytes, symlink loops: nothing that could be read safely
        return None
    return path if path.is_relative_to(root) else None


