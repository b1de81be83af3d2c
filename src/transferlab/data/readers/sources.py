"""Load a named dataset of a recipe, whole or one split, images at the model's resolution: decoded into
memory, or, for a streamed source, located and decoded batch by batch (`stream`, docs/streaming.md).

Most sources are one collection that a seeded `splits` divides; a `PublishedSource` (a benchmark's files)
comes with its publisher's splits, which are kept (`published_roles`)."""

from __future__ import annotations

import logging

import torch

from transferlab.config import (
    BundledSource,
    CifarSource,
    ClipBenchmarkSource,
    DataSource,
    HFDatasetSource,
    ImageFolderSource,
    PublishedSource,
    Splits,
    TableSource,
    TextPairSource,
    WebDatasetSource,
    WinoGAViLSource,
)
from transferlab.data.dataset import ImageTextData
from transferlab.data.memory import STREAM_ABOVE_BYTES
from transferlab.data.readers.text_pairs import TextPairData, load_text_pairs
from transferlab.data.splits import VAL_NAMES, split_indices
from transferlab.errors import UserError

log = logging.getLogger(__name__)


def load_dataset(name: str, spec: DataSource, size: int, channels: int) -> ImageTextData | TextPairData:
    """The whole dataset; of a published source, its train split (or, without split folders, all of it)."""
    if isinstance(spec, PublishedSource):
        published = read_published(name, spec, size, channels)
        if "train" not in published and "all" not in published:
            raise UserError(f"Dataset '{name}' ({spec.root}) publishes no train split, only {', '.join(published)}, "
                            f"so it cannot be trained on; it is for evaluation.")
        return published.get("train", published.get("all"))
    if isinstance(spec, BundledSource):
        from transferlab.data.readers.bundled import load_bundled

        return load_bundled(spec.source, name, size, channels, spec.templates)
    if isinstance(spec, TableSource):
        from transferlab.data.readers.table import count_rows, read_image_table

        stream = spec.stream if spec.stream != "auto" else count_rows(spec) * channels * size**2 > STREAM_ABOVE_BYTES
        return read_image_table(spec, name, size, channels, stream)
    if isinstance(spec, TextPairSource):
        return load_text_pairs(spec, name)
    if isinstance(spec, WebDatasetSource):
        from transferlab.data.readers.webdataset import read_webdataset

        return read_webdataset(spec, name, size, channels, spec.stream)
    raise TypeError(f"unknown data source {type(spec).__name__}")


def load_splits(name: str, spec: DataSource, size: int, channels: int) -> dict[str, ImageTextData | TextPairData]:
    """{'train': ..., 'val': ..., 'test': ...} from the dataset's seeded (stratified) split, or its published one."""
    if isinstance(spec, PublishedSource):
        return published_roles(name, spec, read_published(name, spec, size, channels))
    data = load_dataset(name, spec, size, channels)
    if spec.splits.val == spec.splits.test == 0:  # all of it for training: no order drawn over a pool, no copy
        nothing = torch.zeros(0, dtype=torch.long)
        return {"train": data, "val": data.subset(nothing), "test": data.subset(nothing)}
    return {split: data.subset(index) for split, index in split_indices(len(data), spec.splits, data.labels).items()}


def read_published(name: str, spec: PublishedSource, size: int, channels: int) -> dict[str, ImageTextData]:
    """The splits a published source holds, by their published names ('train', 'test', 'val', ...; 'all' for
    a dataset with no split folders)."""
    if isinstance(spec, ClipBenchmarkSource):
        from transferlab.data.readers.clip_benchmark import read_clip_benchmark

        return read_clip_benchmark(spec, name, size, channels)
    if isinstance(spec, ImageFolderSource):
        from transferlab.data.readers.imagefolder import read_imagefolder

        return read_imagefolder(spec, name, size, channels)
    if isinstance(spec, HFDatasetSource):
        from transferlab.data.readers.hf_datasets import read_hf_dataset

        return read_hf_dataset(spec, name, size, channels)
    if isinstance(spec, CifarSource):
        from transferlab.data.readers.cifar import read_cifar

        return read_cifar(spec, name, size, channels)
    if isinstance(spec, WinoGAViLSource):
        from transferlab.data.readers.winogavil import read_winogavil

        return read_winogavil(spec, name, size, channels)
    raise TypeError(f"unknown published source {type(spec).__name__}")


def published_roles(name: str, spec: PublishedSource, published: dict[str, ImageTextData]) -> dict[str, ImageTextData]:
    """transferlab's train/val/test from a publisher's splits: test is the published test split (a published
    val split stands in when there is none, as ImageNet's does; 'all' of a dataset without splits is the
    test split); val is the published val split beside a test split, else `val_fraction` of train, held out
    seeded and stratified. A split not published is empty."""
    if not published:
        raise UserError(f"Dataset '{name}' ({spec.root}) holds no split.")
    val_name = next((split for split in VAL_NAMES if split in published), None)
    if "all" in published:
        published = {"test": published["all"]}
    unknown = [split for split in published if split not in ("train", "test", *VAL_NAMES)]
    if unknown:
        log.info("dataset %s: published split(s) %s not used (transferlab uses train, val and test)", name, unknown)
    test, val = published.get("test"), None
    if test is None and val_name is not None:
        test = published[val_name]
        log.info("dataset %s: no test split is published; its '%s' split is evaluated on", name, val_name)
    elif val_name is not None:
        val = published[val_name]
    train = published.get("train")
    empty = next(iter(published.values())).subset([])
    if train is not None and val is None and spec.val_fraction > 0:
        held = split_indices(len(train), Splits(train=1 - spec.val_fraction, val=spec.val_fraction, test=0.0,
                                                seed=spec.seed), train.labels)
        train, val = train.subset(held["train"]), train.subset(held["val"])
    if test is None:
        raise UserError(f"Dataset '{name}' ({spec.root}) publishes no test (or val) split, only "
                        f"{', '.join(published)}; transferlab evaluates on the published test split.")
    return {"train": train if train is not None else empty, "val": val if val is not None else empty, "test": test}
