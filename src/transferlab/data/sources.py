"""Load a named dataset of a recipe, whole or one split, images at the model's resolution: decoded into
memory, or, for a streamed source, located and decoded batch by batch (`stream`, docs/streaming.md)."""

from __future__ import annotations

from transferlab.config import BundledSource, DataSource, FolderSource, TextPairSource, WebDatasetSource
from transferlab.data.dataset import ImageTextData
from transferlab.data.pairs import TextPairData, load_text_pairs
from transferlab.data.splits import split_indices

STREAM_ABOVE_BYTES = 2 * 2**30  # `stream: auto` streams a folder source whose decoded images would take more
STREAM_ABOVE_STORED_BYTES = 2**30  # and shards taking more on disk (encoded images are smaller than decoded ones)


def load_dataset(name: str, spec: DataSource, size: int, channels: int) -> ImageTextData | TextPairData:
    if isinstance(spec, BundledSource):
        from transferlab.data.bundled import load_bundled

        return load_bundled(spec.source, name, size, channels, spec.templates)
    if isinstance(spec, FolderSource):
        from transferlab.data.folder import count_rows, read_folder

        stream = spec.stream if spec.stream != "auto" else count_rows(spec) * channels * size**2 > STREAM_ABOVE_BYTES
        return read_folder(spec, name, size, channels, stream)
    if isinstance(spec, TextPairSource):
        return load_text_pairs(spec, name)
    if isinstance(spec, WebDatasetSource):
        from transferlab.data.shards import read_webdataset, stored_bytes

        stream = spec.stream if spec.stream != "auto" else stored_bytes(spec.shards) > STREAM_ABOVE_STORED_BYTES
        return read_webdataset(spec, name, size, channels, stream)
    raise TypeError(f"unknown data source {type(spec).__name__}")


def load_splits(name: str, spec: DataSource, size: int, channels: int) -> dict[str, ImageTextData | TextPairData]:
    """{'train': ..., 'val': ..., 'test': ...} from the dataset's seeded (stratified) split."""
    data = load_dataset(name, spec, size, channels)
    return {split: data.subset(index) for split, index in split_indices(len(data), spec.splits, data.labels).items()}
