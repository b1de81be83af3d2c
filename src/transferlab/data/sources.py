"""Load a named dataset of a recipe, whole or one split, at the model's resolution."""

from __future__ import annotations

from transferlab.config import BundledSource, DataSource, FolderSource, WebDatasetSource
from transferlab.data.dataset import ImageTextData
from transferlab.data.splits import split_indices


def load_dataset(name: str, spec: DataSource, size: int, channels: int) -> ImageTextData:
    if isinstance(spec, BundledSource):
        from transferlab.data.bundled import load_bundled

        return load_bundled(spec.source, name, size, channels, spec.templates)
    if isinstance(spec, FolderSource):
        from transferlab.data.folder import read_folder

        return read_folder(spec, name, size, channels)
    if isinstance(spec, WebDatasetSource):
        from transferlab.data.shards import read_webdataset

        return read_webdataset(spec, name, size, channels)
    raise TypeError(f"unknown data source {type(spec).__name__}")


def load_splits(name: str, spec: DataSource, size: int, channels: int) -> dict[str, ImageTextData]:
    """{'train': ..., 'val': ..., 'test': ...} from the dataset's seeded (stratified) split."""
    data = load_dataset(name, spec, size, channels)
    return {split: data.subset(index) for split, index in split_indices(len(data), spec.splits, data.labels).items()}
