"""A dataset's own files, beside its shards or in the folder above them: CLIP_benchmark's layout
(`<dataset>/<split>/*.tar`), which a webdataset pool of any origin may follow too.

    classnames.txt                          class names, one per line, in label order
    zeroshot_classification_templates.txt   zero-shot templates with {c} (or {}) for the class name
    dataset_type.txt                        "retrieval", "multilabel"; absent: classification

Each is read here, by one function; readers (data/readers/webdataset.py, clip_benchmark.py), whole-shard
streaming, fingerprints and curation (which carries the first two to the curated shards) all go through it.
Torch-free.
"""

from __future__ import annotations

from pathlib import Path

from transferlab.config.schema import placeholder_template
from transferlab.data.report import DataReport
from transferlab.data.tar.remote import is_url, open_url
from transferlab.errors import UserError

CLASSNAMES = "classnames.txt"
TEMPLATES = "zeroshot_classification_templates.txt"
DATASET_TYPE = "dataset_type.txt"
KINDS = ("classification", "retrieval")  # the dataset types transferlab reads


def read_classnames(shard: Path | str, report: DataReport) -> tuple[Path | str, list[str]] | tuple[None, None]:
    """The class names of the pool `shard` belongs to and the file they come from; (None, None) without one."""
    return _dataset_file(shard, CLASSNAMES, report)


def read_templates(shard: Path | str, report: DataReport) -> tuple[Path | str, list[str]] | tuple[None, None]:
    """The zero-shot templates ('{}' for the class name) the pool of `shard` publishes and the file they come
    from; (None, None) without one. A line without '{c}' or '{}' is refused, naming the file."""
    origin, lines = _dataset_file(shard, TEMPLATES, report)
    if origin is None:
        return None, None
    return origin, [_template(line, origin) for line in lines if line]


def read_dataset_type(root: Path) -> str:
    """The kind of a CLIP_benchmark dataset (`root`: its folder): classification when dataset_type.txt is absent."""
    path = root / DATASET_TYPE
    kind = path.read_text(encoding="utf-8").strip().lower() if path.is_file() else "classification"
    if kind not in KINDS:
        raise UserError(f"{path} says '{kind}'; transferlab reads {' and '.join(KINDS)} datasets of CLIP_benchmark's "
                        f"layout (a multilabel set's .npy labels are not read).")
    return kind


def beside(source: Path | str, name: str) -> Path | str:
    """The file `name` in the folder of the shard `source` (a path, or a URL)."""
    return f"{str(source).rsplit('/', 1)[0]}/{name}" if is_url(source) else Path(source).parent / name


def _dataset_file(shard: Path | str, file_name: str,
                  report: DataReport) -> tuple[Path | str, list[str]] | tuple[None, None]:
    """A dataset-level file and its lines, read beside the shards or in their parent folder; (None, None) when in
    neither. One found in the parent folder is reported: where names come from is never a silent guess."""
    here = beside(shard, file_name)
    parent = f"{str(shard).rsplit('/', 2)[0]}/{file_name}" if is_url(shard) else Path(shard).parent.parent / file_name
    for candidate in (here, parent):
        lines = read_lines(candidate)
        if lines is not None:
            if candidate is parent:
                report.note(f"{file_name} read from the dataset folder above the shards: {candidate}", warn=False)
            return candidate, lines
    return None, None


def _template(line: str, origin: Path | str) -> str:
    try:
        return placeholder_template(line)
    except ValueError as err:
        raise UserError(f"{origin}: {err}. Fix that line, or delete the file to use the suite's eval.templates.") \
            from None


def read_lines(path: Path | str) -> list[str] | None:
    """The stripped lines of a UTF-8 text file (a URL or a path) without trailing empty ones; None if it
    cannot be read or is empty."""
    try:
        if is_url(path):
            with open_url(str(path)) as file:
                raw = file.read()
        elif Path(path).is_file():
            raw = Path(path).read_bytes()
        else:
            return None
    except OSError:
        return None
    try:
        names = [line.strip() for line in raw.decode("utf-8-sig").splitlines()]
    except UnicodeDecodeError:
        raise UserError(f"{path} is not valid UTF-8. Re-save it as UTF-8, one entry per line.") from None
    while names and not names[-1]:
        names.pop()
    return names or None
