"""`source: table`: images listed in a CSV, TSV or JSON-lines table, read into an `ImageTextData`.

Each row names one image (relative to the images folder), its caption and optionally a class label.
Rows naming the same image merge into one sample with several captions, which is how caption datasets
such as COCO list five captions per image. A bad row either stops the read with a `UserError` naming the
file, line and fix, or is skipped and counted in the data report, as `bad_samples` says; images are never
read from outside the images folder.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from transferlab.config import TableSource
from transferlab.data.dataset import ImageTextData
from transferlab.data.images import BadImage, decode_image
from transferlab.data.lazy import LazyImages
from transferlab.data.memory import check_fits
from transferlab.data.readers.table_rows import read_table
from transferlab.data.report import BadSamples, DataReport
from transferlab.data.samples import Sample, assemble, clean_captions, progress
from transferlab.errors import UserError


def read_image_table(spec: TableSource, name: str, size: int, channels: int, stream: bool = False) -> ImageTextData:
    """Read the images and captions listed in `spec.table` into memory, decoded to [C, size, size]; with
    `stream`, only their paths (`LazyImages`, decoded batch by batch later)."""
    table = Path(spec.table)
    root = Path(spec.images or table.parent).resolve()
    templated = bool(spec.templates) and spec.label_column is not None
    if spec.caption_column is None and not templated:
        raise UserError(f"Dataset '{name}' has no captions: set `datasets.{name}.caption_column` to the column that "
                        f"holds them, or set `datasets.{name}.label_column` and `datasets.{name}.templates` (e.g. "
                        f"['a photo of a {{}}.']) to make captions from class names.")
    bad = BadSamples(name, spec.bad_samples, DataReport(), "row")
    records = read_table(table, name, bad)
    records.require(spec.image_column, "image_column", "image paths")
    if spec.label_column:
        records.require(spec.label_column, "label_column", "class labels")
    caption_column = spec.caption_column
    if caption_column is not None and (caption_column in records.columns or not templated):
        records.require(caption_column, "caption_column", "captions",
                        f"; or set `datasets.{name}.label_column` and `datasets.{name}.templates` to make "
                        f"captions from class names")
    else:
        caption_column = None  # the default column is absent: captions come from the templates

    rows: dict[Path, tuple[int, str, list[str], str | None]] = {}
    for line, record in records.rows:
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

    if not stream:
        check_fits(len(rows), channels, size, name, str(table), streams=True)
    samples, paths = [], []
    for path, (line, raw, captions, label) in progress(rows.items(), table.name, len(rows)):
        where = f"{table} line {line}"
        if not path.is_file():
            state = "is not a file" if path.exists() else "does not exist"
            bad("missing image", where, f"image '{raw}' {state} (looked for {path})")
            continue
        if stream:
            samples.append(Sample(len(paths), captions, label, where))
            paths.append(str(path))
            continue
        try:
            samples.append(Sample(decode_image(path, size, channels), captions, label, where))
        except BadImage as err:
            bad(err.reason, where, f"image '{raw}' cannot be decoded: {err}")
    return assemble(name, str(table), samples, bad, spec.templates, spec.label_column is not None,
                    stack=functools.partial(LazyImages.whole_files, paths) if stream else torch.stack)


def count_rows(spec: TableSource) -> int:
    """The number of data rows of the source's table (lines, without reading them as records): enough to
    decide whether its decoded images would fit in memory."""
    with open(spec.table, "rb") as file:
        return max(0, sum(1 for line in file if line.strip()) - (Path(spec.table).suffix != ".jsonl"))


def _parse_row(record: dict, where: str, spec: TableSource, caption_column: str | None, templated: bool,
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


