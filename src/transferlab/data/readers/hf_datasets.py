"""Read a Hugging Face `datasets` dataset from disk with pyarrow alone (`datasets` itself is not needed).

Three layouts: a folder written by `DatasetDict.save_to_disk` (dataset_dict.json, then per split a folder of
Arrow stream files `data-*.arrow` listed in state.json, with the features in dataset_info.json) or by
`Dataset.save_to_disk` (one such folder: split 'all'); the cache `load_dataset(..., cache_dir=DIR)` fills
(`DIR/<owner>___<name>/<config>/<version>/<hash>/<builder>-<split>[-NNNNN-of-NNNNN].arrow` beside
dataset_info.json: how DataComp's download_evalsets.py keeps its retrieval sets and WinoGAViL, `root` being
DIR, the `<owner>___<name>` folder or any folder down to the hash); or parquet files as the hub ships them,
`<split>-*.parquet`, `data/<split>-*.parquet` or `<split>/*.parquet`, the features in the schema metadata
(b"huggingface"). Images are `Image` features, {"bytes", "path"} structs, decoded from their bytes, or, when
a loading script stored only the path of a file it extracted (`<cache>/downloads/extracted/...`), from that
file (found again under the cache's downloads/ when the cache was moved). Class names come from the label
column's `ClassLabel` feature (string labels: the sorted values; bare integers: no names, which zero-shot
cannot use).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transferlab.config import HFDatasetSource
from transferlab.data.dataset import ImageTextData
from transferlab.data.images import BadImage, decode_image
from transferlab.data.memory import check_fits
from transferlab.data.report import BadSamples, DataReport
from transferlab.data.samples import INTEGER, Sample, assemble, clean_captions, progress
from transferlab.data.splits import VAL_NAMES
from transferlab.errors import UserError, did_you_mean

log = logging.getLogger(__name__)

SPLIT_NAMES = ("train", "test", *VAL_NAMES)
BATCH_ROWS = 256  # rows of encoded images held at a time while decoding


@dataclass
class Split:
    """One split's files (Arrow stream files of save_to_disk, or parquet files) and its features."""

    files: list[Path]
    arrow: bool
    features: dict[str, Any] = field(default_factory=dict)
    features_from: str = ""

    def schema(self):
        return self._table(self.files[0]).schema if self.arrow else \
            _reading(self.files[0], lambda: _pyarrow()[1].read_schema(self.files[0]))

    def rows(self) -> int:
        return sum(self._table(file).num_rows if self.arrow else self._parquet(file).metadata.num_rows
                   for file in self.files)

    def column(self, name: str) -> list:
        pq = _pyarrow()[1]
        return [value for file in self.files for value in
                (self._table(file) if self.arrow else _reading(file, lambda f=file: pq.read_table(f, columns=[name])))
                .column(name).to_pylist()]

    def batches(self, columns: list[str]) -> Iterator[tuple[Path, int, Any]]:
        """(file, row of the batch's first record in that file, record batch of `columns`)."""
        for file in self.files:
            first = 0
            batches = self._table(file).select(columns).to_batches(BATCH_ROWS) if self.arrow else \
                _guarded(file, self._parquet(file).iter_batches(batch_size=BATCH_ROWS, columns=columns))
            for batch in batches:
                yield file, first, batch
                first += batch.num_rows

    @staticmethod
    def _table(file: Path):
        """An Arrow stream file as a table, memory-mapped (its images are not read until used)."""
        pa = _pyarrow()[0]
        return _reading(file, lambda: pa.ipc.open_stream(pa.memory_map(str(file))).read_all())

    @staticmethod
    def _parquet(file: Path):
        return _reading(file, lambda: _pyarrow()[1].ParquetFile(file))


def read_hf_dataset(spec: HFDatasetSource, name: str, size: int, channels: int) -> dict[str, ImageTextData]:
    """The dataset's splits by name ('all' for a single saved Dataset), images decoded to [C, size, size]."""
    _pyarrow(name)
    root = Path(spec.root).expanduser()
    if not root.exists():
        raise UserError(f"Dataset '{name}': {root} does not exist. Set `datasets.{name}.root` to a folder written by "
                        f"`save_to_disk`, or to a folder of the dataset's parquet files.")
    if spec.label_column is None and spec.caption_column is None:
        raise UserError(f"Dataset '{name}' has neither labels nor captions: set `datasets.{name}.label_column` (a "
                        f"ClassLabel column) or `datasets.{name}.caption_column`.")
    splits = hf_splits(root)
    columns = _check_columns(name, spec, splits)
    classnames, named_from = _classnames(name, spec, root, splits)
    check_fits(sum(split.rows() for split in splits.values()), channels, size, name, str(root))
    return {split_name: _read_split(spec, name, split, columns, classnames, named_from, size, channels)
            for split_name, split in splits.items()}


def _read_split(spec: HFDatasetSource, name: str, split: Split, columns: list[str], classnames: list[str] | None,
                named_from: str | None, size: int, channels: int) -> ImageTextData:
    bad = BadSamples(name, spec.bad_samples, DataReport(), "row")
    index = None if classnames is None or split.features.get(spec.label_column, {}).get("_type") == "ClassLabel" \
        else {classname: i for i, classname in enumerate(classnames)}
    samples = []
    for where, image, label, captions in progress(_rows(split, columns, spec), split.files[0].parent.name,
                                                  split.rows()):
        encoded = image_bytes(image, split.files[0].parent)
        if encoded is None:
            path = image.get("path") if isinstance(image, dict) else None
            detail = f"the image has only a path ('{path}'), which is not a file here" if path else "no image"
            bad("missing image", where, f"{detail} in column '{spec.image_column}'",
                fix="Store the image bytes in the dataset: load it with `datasets` where the files exist and "
                    "`save_to_disk` it (which embeds them; `to_parquet` does not)" if path else None)
            continue
        captions = clean_captions(captions) if spec.caption_column else []
        if captions is None:
            bad("invalid caption", where, f"'{spec.caption_column}' must be a string or a list of strings")
            continue
        if not captions and classnames is None:
            bad("empty caption", where, f"the caption in '{spec.caption_column}' is empty")
            continue
        if classnames is not None:
            label = _label(label, index, len(classnames), where, bad)
            if label is None:
                continue
        try:
            pixels = decode_image(encoded, size, channels)
        except BadImage as err:
            bad(err.reason, where, f"the image in column '{spec.image_column}' cannot be decoded: {err}")
            continue
        samples.append(Sample(pixels, captions, None if label is None else str(label), where))
    data = assemble(name, str(split.files[0].parent), samples, bad, spec.templates, classnames is not None,
                    known=classnames, known_from=named_from or "")
    data.classnames_from = named_from
    return data


def image_bytes(image: Any, folder: Path) -> bytes | None:
    """The encoded bytes of an `Image` feature's value: its bytes, else the file at its path (an absolute path
    into a `datasets` cache that was moved is looked for under the downloads/ of an ancestor of `folder`, the
    folder of the dataset's files); None when there is neither."""
    if not isinstance(image, dict):
        return image or None
    if image.get("bytes"):
        return image["bytes"]
    path = Path(image["path"]) if image.get("path") else None
    if path is None:
        return None
    candidates = [path]
    if "downloads" in path.parts:
        tail = path.parts[len(path.parts) - path.parts[::-1].index("downloads"):]
        candidates += [parent / "downloads" / Path(*tail) for parent in folder.parents]
    found = next((candidate for candidate in candidates if candidate.is_file()), None)
    return found.read_bytes() if found is not None else None


def _rows(split: Split, columns: list[str], spec: HFDatasetSource) -> Iterator[tuple[str, Any, Any, Any]]:
    """(where, image, raw label, raw captions) of every row, in order."""
    for file, first, batch in split.batches(columns):
        values = {column: batch.column(column).to_pylist() for column in columns}
        for j in range(batch.num_rows):
            yield (f"{file} row {first + j}", values[spec.image_column][j],
                   values[spec.label_column][j] if spec.label_column else None,
                   values[spec.caption_column][j] if spec.caption_column else None)


def _label(value: Any, index: dict[str, int] | None, count: int, where: str, bad: BadSamples) -> int | None:
    """The class index of a raw label (a ClassLabel or bare integer, or a string looked up in `index`)."""
    if value is None or value == -1:  # ClassLabel's -1: the row has no label (hub test splits often do)
        return bad("missing label", where, "the row has no label")
    number = index.get(value, -1) if isinstance(value, str) and index is not None else value
    if isinstance(number, bool) or not isinstance(number, int) or not 0 <= number < count:
        return bad("unknown label", where, f"the label {value!r} is not one of the {count} classes")
    return number


def _check_columns(name: str, spec: HFDatasetSource, splits: dict[str, Split]) -> list[str]:
    wanted = [("image_column", spec.image_column), ("label_column", spec.label_column),
              ("caption_column", spec.caption_column)]
    for split in splits.values():
        schema = split.schema()
        for key, column in wanted:
            if column is not None and column not in schema.names:
                unset = f", or set `datasets.{name}.{key}: null`" if key != "image_column" else ""
                raise UserError(f"{split.files[0]} has no column '{column}' (its columns: {', '.join(schema.names)})."
                                f"{did_you_mean(column, schema.names)} Set `datasets.{name}.{key}` to the right "
                                f"column{unset}.")
    return [column for _, column in wanted if column is not None]


def _classnames(name: str, spec: HFDatasetSource, root: Path,
                splits: dict[str, Split]) -> tuple[list[str] | None, str | None]:
    """(class names, where they come from): a ClassLabel feature's names (the same in every split), the sorted
    string labels of all splits, or for bare integers '0'..'max' and None."""
    column = spec.label_column
    if column is None:
        return None, None
    features = [(split.features.get(column, {}), split.features_from) for split in splits.values()]
    if all(feature.get("_type") == "ClassLabel" for feature, _ in features):
        names, where = [str(n) for n in features[0][0].get("names", [])], features[0][1]
        for feature, other in features[1:]:
            if [str(n) for n in feature.get("names", [])] != names:
                raise UserError(f"The ClassLabel feature of '{column}' names other classes in {other} than in {where}, "
                                f"so labels mean different classes in different splits. Save all splits with one "
                                f"ClassLabel feature.")
        if not names:
            raise UserError(f"The ClassLabel feature of '{column}' in {where} names no classes.")
        return names, f"ClassLabel feature of {where}"
    values = {value for split in splits.values() for value in split.column(column) if value is not None}
    if values and all(isinstance(value, str) for value in values):
        numeric = all(INTEGER.fullmatch(value) for value in values)
        return sorted(values, key=int if numeric else None), f"the '{column}' values of {root}"
    if all(isinstance(value, int) and not isinstance(value, bool) for value in values):
        log.warning("dataset %s: '%s' holds integers without a ClassLabel feature, so the classes have no names "
                    "(zero-shot tasks need them); save the dataset with a ClassLabel feature to name them", name,
                    column)
        return [str(i) for i in range(max((v for v in values if v >= 0), default=-1) + 1)], None
    kinds = sorted({type(value).__name__ for value in values})
    raise UserError(f"The '{column}' column of {root} holds {', '.join(kinds)} values, not class labels (a ClassLabel, "
                    f"strings or integers). Set `datasets.{name}.label_column` to the label column, or to null.")


def hf_splits(root: Path) -> dict[str, Split]:
    """The splits of a `datasets` folder in any of the three layouts."""
    return _saved(root) or _cached(root) or _parquet(root)


def _cached(root: Path) -> dict[str, Split] | None:
    """The splits of a `load_dataset` cache under root (the newest build when it holds several), or None."""
    if root.is_file():
        return None
    builds = [info.parent for info in root.rglob("dataset_info.json") if "downloads" not in info.parts
              and next(info.parent.glob("*.arrow"), None) is not None]
    if not builds:
        return None
    build = max(builds, key=lambda folder: (folder / "dataset_info.json").stat().st_mtime_ns)
    if len(builds) > 1:
        log.warning("%s holds %d builds of a `datasets` cache; reading the newest, %s", root, len(builds), build)
    features = _json(build / "dataset_info.json").get("features")
    groups: dict[str, list[Path]] = {}
    for file in sorted(build.glob("*.arrow")):
        stem = re.sub(r"-\d{5}-of-\d{5}$", "", file.stem)
        groups.setdefault(stem.rsplit("-", 1)[-1], []).append(file)
    return {split: Split(files, arrow=True, features=features if isinstance(features, dict) else {},
                         features_from=str(build / "dataset_info.json")) for split, files in groups.items()}


def _saved(root: Path) -> dict[str, Split] | None:
    """The splits of a save_to_disk folder, or None when root is not one."""
    if (root / "dataset_dict.json").is_file():
        listed = _json(root / "dataset_dict.json").get("splits")
        if not isinstance(listed, list) or not listed:
            raise UserError(f"{root / 'dataset_dict.json'} lists no splits. Save the dataset again with "
                            f"`DatasetDict.save_to_disk`.")
        return {str(split): _saved_split(root / str(split)) for split in listed}
    if (root / "state.json").is_file():
        return {"all": _saved_split(root)}
    return None


def _saved_split(folder: Path) -> Split:
    state = folder / "state.json"
    if not state.is_file():
        raise UserError(f"{state} is missing: the folder of a split saved with `save_to_disk` has its state.json, "
                        f"dataset_info.json and data-*.arrow files. Save the dataset again.")
    listed = _json(state).get("_data_files") or []
    files = [folder / entry["filename"] for entry in listed if isinstance(entry, dict) and "filename" in entry]
    missing = [file for file in files if not file.is_file()]
    if not files or missing:
        raise UserError(f"{state} lists {'no data files' if not files else f'{missing[0]}, which is missing'}. "
                        f"Save the dataset again with `save_to_disk`.")
    split = Split(files, arrow=True)
    info = folder / "dataset_info.json"
    features = _json(info).get("features") if info.is_file() else None
    if isinstance(features, dict):
        split.features, split.features_from = features, str(info)
    else:
        split.features, split.features_from = _metadata_features(split.schema()), str(files[0])
    return split


def _parquet(root: Path) -> dict[str, Split]:
    """Parquet files by split: `<split>-*.parquet` in root or root/data, or `<split>/*.parquet` folders; files
    that name no known split make one split 'all'."""
    if root.is_file() and root.suffix == ".parquet":
        groups = {"all": [root]}
    else:
        groups = {}
        for file in sorted([*root.glob("*.parquet"), *root.glob("data/*.parquet")]):
            groups.setdefault(file.name.split("-")[0].removesuffix(".parquet"), []).append(file)
        for folder in sorted(path for path in root.iterdir() if path.is_dir() and path.name != "data"):
            groups.setdefault(folder.name, []).extend(sorted(folder.glob("*.parquet")))
        groups = {split: files for split, files in groups.items() if files}
    if not groups:
        raise UserError(f"{root} holds no dataset saved with `save_to_disk` (dataset_dict.json or state.json), no "
                        f"`load_dataset` cache (dataset_info.json beside *.arrow files) and no parquet files "
                        f"(<split>-*.parquet, data/<split>-*.parquet or <split>/*.parquet). Set "
                        f"`datasets.<name>.root` to such a folder.")
    if not any(split in SPLIT_NAMES for split in groups):
        groups = {"all": [file for files in groups.values() for file in files]}
    splits = {}
    for split_name, files in groups.items():
        split = Split(files, arrow=False, features_from=str(files[0]))
        split.features = _metadata_features(split.schema())
        splits[split_name] = split
    return splits


def _metadata_features(schema) -> dict[str, Any]:
    """The `datasets` features stored in an Arrow schema's metadata ({} when there are none)."""
    raw = (schema.metadata or {}).get(b"huggingface")
    try:
        features = json.loads(raw).get("info", {}).get("features") if raw else None
    except (ValueError, AttributeError):
        features = None
    return features if isinstance(features, dict) else {}


def _json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise UserError(f"{path} cannot be read as JSON ({err}). Save the dataset again with `save_to_disk`.") from None
    if not isinstance(value, dict):
        raise UserError(f"{path} is not a JSON object. Save the dataset again with `save_to_disk`.")
    return value


def _reading(file: Path, read):
    """`read()`, with pyarrow's errors on a damaged file turned into a message."""
    pa = _pyarrow()[0]
    try:
        return read()
    except (pa.ArrowException, OSError) as err:
        raise _damaged(file, err) from None


def _guarded(file: Path, items: Iterator) -> Iterator:
    """`items` (read lazily from `file`), with pyarrow's errors turned into a message."""
    pa = _pyarrow()[0]
    try:
        yield from items
    except (pa.ArrowException, OSError) as err:
        raise _damaged(file, err) from None


def _damaged(file: Path, err: Exception) -> UserError:
    kind = "an Arrow stream file of `save_to_disk`" if file.suffix == ".arrow" else "a parquet file"
    return UserError(f"{file} cannot be read as {kind} ({type(err).__name__}: {err}); it is damaged or not that "
                     f"format. Save or download the dataset again.")


def _pyarrow(name: str | None = None):
    """(pyarrow, pyarrow.parquet), or a UserError saying how to install them."""
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        dataset = f"Dataset '{name}' (source hf-datasets)" if name else "A source hf-datasets"
        raise UserError(f"{dataset} is read with pyarrow, which is not installed. Install it with "
                        f"pip install 'transferlab[datasets]'.") from None
    return pyarrow, pyarrow.parquet
