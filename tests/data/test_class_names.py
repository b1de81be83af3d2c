"""Every reader that takes class names from a file (or a dataset's own class list) lines them up with the labels
when the labels never reach the last class.

A names file read off by one (a line dropped or added at the top) is caught by an out-of-range label only when
some sample has the last class; here none has, so each case asserts the whole list of names (the unused last one
included) and, for every sample, that the name its label indexes is the class it was written as (and, with
templates, that its caption names that class). The names are distinct, first and last included."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest

from tests.layouts import encode, pngs, write_clip_benchmark
from transferlab.config import CifarSource, ClipBenchmarkSource, HFDatasetSource, ImageFolderSource, WebDatasetSource
from transferlab.data.readers.cifar import read_cifar
from transferlab.data.readers.hf_datasets import read_hf_dataset
from transferlab.data.readers.imagefolder import read_imagefolder
from transferlab.data.readers.sources import load_splits
from transferlab.data.readers.webdataset import read_webdataset
from transferlab.data.stream.whole_shards import Cursor, SlotStream, open_shard_pool

NAMES = ["alpha", "beta", "gamma", "delta"]  # label 3, "delta", is never used
LABELS = [0, 2, 1, 1, 0, 2, 2, 0]
TEMPLATE = "a photo of {}."


def assert_lined_up(classnames: list[str], labels: list[int], written: list[str], captions=None) -> None:
    """`written`: each sample's class as written; `captions`: each sample's template captions, if any."""
    assert classnames == NAMES
    assert max(labels) < len(NAMES) - 1  # the last class is unused: no label can go out of range
    assert [classnames[label] for label in labels] == written
    if captions is not None:
        assert [list(texts) for texts in captions] == [[TEMPLATE.format(name)] for name in written]


def write_shards(folder: Path, label_of, compress: bool = False) -> str:
    """Two webdataset shards of the LABELS (an image and a .cls member `label_of(label)` each), classnames.txt
    beside them; their pattern."""
    folder.mkdir(parents=True)
    (folder / "classnames.txt").write_text("\n".join(NAMES) + "\n")
    images = pngs(len(LABELS), 0, size=6)
    suffix, mode = (".tar.gz", "w:gz") if compress else (".tar", "w")
    for shard in range(2):
        with tarfile.open(folder / f"s{shard}{suffix}", mode) as tar:
            for i in range(shard * 4, shard * 4 + 4):
                for ext, data in (("png", encode(images[i])), ("cls", label_of(LABELS[i]).encode())):
                    info = tarfile.TarInfo(f"{i:04d}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return str(folder / f"s{{0..1}}{suffix}")


def webdataset_spec(shards: str, **options) -> WebDatasetSource:
    return WebDatasetSource(source="webdataset", shards=shards, label_key="cls", templates=[TEMPLATE], **options)


@pytest.mark.parametrize(("labels_as", "compress", "stream"), [
    ("index", False, False), ("index", False, True), ("index", True, False), ("name", False, False)],
    ids=["in-memory", "streamed-index", "compressed", "labels-by-name"])
def test_webdataset_shards_with_a_classnames_file(tmp_path, labels_as, compress, stream):
    """Read through the pool index (decoded, or streamed) or front to back (compressed shards); .cls members
    holding the class index or the class name."""
    label_of = str if labels_as == "index" else NAMES.__getitem__
    shards = write_shards(tmp_path / "pool", label_of, compress)
    data = read_webdataset(webdataset_spec(shards), "pool", 6, 3, stream=stream)
    assert_lined_up(data.classnames, data.labels.tolist(), [NAMES[label] for label in LABELS], list(data.captions))


def test_whole_shards_with_a_classnames_file(tmp_path):
    """`train.sampling: shards` reads its class names itself; each sample is known by its key here, since the
    reader shuffles."""
    pool = open_shard_pool(webdataset_spec(write_shards(tmp_path / "pool", str), splits={"train": 1}), "pool")
    stream = SlotStream(pool, 0, 1, seed=3, buffer=3, cursor=Cursor())
    labels, written, captions = [], [], []
    for _, texts, label, where in stream:
        if stream.cursor.epoch > 0:
            break
        labels.append(label)
        written.append(NAMES[LABELS[int(where.rsplit("'", 2)[1])]])  # where: "<shard>, sample '<key>'"
        captions.append(texts)
    assert len(labels) == len(LABELS)
    assert_lined_up(pool.classnames, labels, written, captions)


def test_clip_benchmark_classnames_in_the_dataset_folder(tmp_path):
    images = pngs(len(LABELS), 1)
    root = write_clip_benchmark(tmp_path / "wds_greek", {"test": list(zip(images, LABELS, strict=True))}, NAMES,
                                [TEMPLATE], max_count=3)
    data = load_splits("greek", ClipBenchmarkSource(source="clip-benchmark", root=str(root)), 12, 3)["test"]
    assert_lined_up(data.classnames, data.labels.tolist(), [NAMES[label] for label in LABELS])


@pytest.mark.parametrize("kind", ["cifar-10", "cifar-100"])
def test_cifar_label_names_files(tmp_path, kind):
    """CIFAR-10's batches.meta.txt (here 4 names, labels 0-2) and CIFAR-100's fine_label_names.txt."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (len(LABELS), 3072), dtype=np.uint8)
    if kind == "cifar-10":
        folder = tmp_path / "cifar-10-batches-bin"
        folder.mkdir()
        record = b"".join(bytes([label]) + image.tobytes() for label, image in zip(LABELS, pixels, strict=True))
        for file in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
            (folder / file).write_bytes(record)
        (folder / "batches.meta.txt").write_text("\n".join(NAMES) + "\n\n")  # the real file ends in blank lines
    else:
        folder = tmp_path / "cifar-100-binary"
        folder.mkdir()
        record = b"".join(bytes([9, label]) + image.tobytes() for label, image in zip(LABELS, pixels, strict=True))
        (folder / "train.bin").write_bytes(record)
        (folder / "test.bin").write_bytes(record)
        (folder / "fine_label_names.txt").write_text("\n".join(NAMES) + "\n")
        (folder / "coarse_label_names.txt").write_text("\n".join(f"super{i}" for i in range(10)) + "\n")
    data = read_cifar(CifarSource(source="cifar", root=str(folder), templates=[TEMPLATE]), "c", 8, 3)["test"]
    assert_lined_up(data.classnames, data.labels.tolist(), [NAMES[label] for label in LABELS], data.captions)


def test_imagefolder_classes_with_the_last_one_empty(tmp_path):
    """Class folders sorted (alpha, beta, delta, gamma: the names' sorted order), the last one without images in
    either split; each image's class is its folder."""
    classes = sorted(NAMES)
    images = pngs(len(LABELS), 2)
    for split in ("train", "test"):
        for name in classes:
            (tmp_path / "tree" / split / name).mkdir(parents=True)
        for i, label in enumerate(LABELS):
            (tmp_path / "tree" / split / classes[label] / f"{i}.png").write_bytes(encode(images[i]))
    data = read_imagefolder(ImageFolderSource(source="imagefolder", root=str(tmp_path / "tree"),
                                              templates=[TEMPLATE]), "tree", 12, 3)
    for split in ("train", "test"):
        # listed class by class: labels 0, 0, 0, 1, 1, 2, 2, 2
        written = [classes[label] for label in sorted(LABELS)]
        assert data[split].classnames == classes
        assert [data[split].classnames[label] for label in data[split].labels.tolist()] == written
        assert [list(texts) for texts in data[split].captions] == [[TEMPLATE.format(name)] for name in written]


def test_hugging_face_classlabel_names(tmp_path, monkeypatch):
    """The ClassLabel feature's names (saved in dataset_info.json), written with the real `datasets` library."""
    for variable, value in [("HF_DATASETS_OFFLINE", "1"), ("HF_HUB_OFFLINE", "1"), ("HF_HOME", str(tmp_path / "hf"))]:
        monkeypatch.setenv(variable, value)
    import datasets

    images = pngs(len(LABELS), 3, size=5)
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=NAMES)})
    rows = {"image": [{"bytes": encode(image), "path": None} for image in images], "label": LABELS}
    datasets.Dataset.from_dict(rows, features=features).save_to_disk(tmp_path / "saved")
    data = read_hf_dataset(HFDatasetSource(source="hf-datasets", root=str(tmp_path / "saved"), templates=[TEMPLATE]),
                           "saved", 5, 3)["all"]
    assert_lined_up(data.classnames, data.labels.tolist(), [NAMES[label] for label in LABELS], data.captions)
