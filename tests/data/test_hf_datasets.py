"""Hugging Face datasets written with the real `datasets` library (save_to_disk, to_parquet) and read back
with pyarrow alone: labels, class order, captions and pixels, and every bad input."""

from __future__ import annotations

import io
import logging
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from transferlab.config import HFDatasetSource
from transferlab.data.readers.hf_datasets import read_hf_dataset
from transferlab.data.readers.sources import load_splits
from transferlab.errors import UserError

NAMES = ["zebra", "ant", "cat"]  # not sorted: the ClassLabel order is the class order
RNG = np.random.default_rng(0)


@pytest.fixture
def hf(tmp_path, monkeypatch):
    """The `datasets` module, offline, with its caches in tmp_path."""
    cache = tmp_path / "hf-cache"
    for variable, value in [("HF_DATASETS_OFFLINE", "1"), ("HF_HUB_OFFLINE", "1"), ("HF_HOME", str(cache)),
                            ("HF_DATASETS_CACHE", str(cache / "datasets"))]:
        monkeypatch.setenv(variable, value)
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache / "datasets")
    return datasets


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def images(count: int, mode: str = "RGB") -> list[np.ndarray]:
    shape = (5, 5, 3) if mode == "RGB" else (5, 5)
    return [RNG.integers(0, 256, shape, dtype=np.uint8) for _ in range(count)]


def chw(pixels: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(pixels.transpose(2, 0, 1).copy())


def dataset(hf, labels: list, pixels: list[np.ndarray], label_feature=None, **columns):
    features = {"image": hf.Image(), "label": label_feature or hf.ClassLabel(names=NAMES)}
    for column, values in columns.items():
        features[column] = hf.List(hf.Value("string")) if isinstance(values[0], list) else hf.Value("string")
    data = {"image": [{"bytes": png(p), "path": None} for p in pixels], "label": labels, **columns}
    return hf.Dataset.from_dict(data, features=hf.Features(features))


def spec(root: Path, **options) -> HFDatasetSource:
    return HFDatasetSource(source="hf-datasets", root=str(root), **options)


def read(root: Path, size=5, channels=3, **options):
    return read_hf_dataset(spec(root, **options), "mine", size, channels)


def test_save_to_disk_dataset_dict(hf, tmp_path):
    train, test = images(4), images(2)
    captions = [["one", " two "], [], ["three"], ["four"]]
    hf.DatasetDict({"train": dataset(hf, [2, 0, 1, 2], train, caption=captions),
                    "test": dataset(hf, [1, 1], test, caption=[["x"], ["y"]])}).save_to_disk(tmp_path / "dd")
    data = read(tmp_path / "dd", caption_column="caption")
    assert sorted(data) == ["test", "train"]
    assert data["train"].classnames == data["test"].classnames == NAMES
    assert data["train"].classnames_from == f"ClassLabel feature of {tmp_path / 'dd' / 'train' / 'dataset_info.json'}"
    assert data["train"].labels.tolist() == [2, 0, 1, 2] and data["test"].labels.tolist() == [1, 1]
    assert data["train"].captions == [["one", "two"], [], ["three"], ["four"]]
    assert data["train"].images.dtype == torch.uint8 and data["train"].images.shape == (4, 3, 5, 5)
    for i, pixels in enumerate(train):
        assert torch.equal(data["train"].images[i], chw(pixels))
    assert torch.equal(data["test"].images[1], chw(test[1]))


def test_a_saved_dataset_without_splits_is_all_and_templates_make_captions(hf, tmp_path):
    pixels = images(3, mode="L")
    dataset(hf, [0, 2, 1], pixels).save_to_disk(tmp_path / "one")
    data = read(tmp_path / "one", channels=1, templates=["a photo of a {}."])
    assert list(data) == ["all"]
    assert data["all"].captions == [["a photo of a zebra."], ["a photo of a cat."], ["a photo of a ant."]]
    assert torch.equal(data["all"].images[:, 0], torch.from_numpy(np.stack(pixels)))


@pytest.mark.parametrize("layout", ["{split}-00000-of-00001.parquet", "data/{split}-00000-of-00001.parquet",
                                    "{split}/0000.parquet"])
def test_parquet_layouts_of_the_hub(hf, tmp_path, layout):
    root = tmp_path / "pq"
    train, test = images(3), images(2)
    for split, labels, pixels in [("train", [0, 1, 2], train), ("test", [2, 0], test)]:
        path = root / layout.format(split=split)
        path.parent.mkdir(parents=True, exist_ok=True)
        dataset(hf, labels, pixels).to_parquet(str(path))
    data = read(root)
    assert sorted(data) == ["test", "train"]
    assert data["test"].classnames == NAMES and data["test"].labels.tolist() == [2, 0]
    assert data["test"].classnames_from == f"ClassLabel feature of {root / layout.format(split='test')}"
    assert torch.equal(data["train"].images[2], chw(train[2])) and torch.equal(data["test"].images[0], chw(test[0]))
    assert data["train"].captions == [[], [], []]


def test_string_labels_are_sorted_across_splits(hf, tmp_path):
    string = hf.Value("string")
    hf.DatasetDict({"train": dataset(hf, ["dog", "cat", "emu"], images(3), string),
                    "test": dataset(hf, ["emu", "ant"], images(2), string)}).save_to_disk(tmp_path / "dd")
    data = read(tmp_path / "dd")
    assert data["train"].classnames == data["test"].classnames == ["ant", "cat", "dog", "emu"]
    assert data["train"].labels.tolist() == [2, 1, 3] and data["test"].labels.tolist() == [3, 0]
    assert data["test"].classnames_from == f"the 'label' values of {tmp_path / 'dd'}"


def test_integer_labels_without_classlabel_have_no_names(hf, tmp_path, caplog):
    integer = hf.Value("int64")
    hf.DatasetDict({"train": dataset(hf, [0, 3], images(2), integer),
                    "test": dataset(hf, [1], images(1), integer)}).save_to_disk(tmp_path / "dd")
    with caplog.at_level(logging.WARNING, logger="transferlab.data.readers.hf_datasets"):
        data = read(tmp_path / "dd")
    assert data["train"].classnames == ["0", "1", "2", "3"] and data["train"].labels.tolist() == [0, 3]
    assert data["test"].labels.tolist() == [1] and data["test"].classnames_from is None
    assert "without a ClassLabel feature" in caplog.text


def test_captions_without_labels(hf, tmp_path):
    pixels = images(2)
    rows = {"image": [{"bytes": png(p), "path": None} for p in pixels], "text": ["a red thing", "a blue one"]}
    features = hf.Features({"image": hf.Image(), "text": hf.Value("string")})
    hf.Dataset.from_dict(rows, features=features).to_parquet(str(tmp_path / "pairs.parquet"))
    data = read(tmp_path, label_column=None, caption_column="text")
    assert list(data) == ["all"]  # no file names a split
    assert data["all"].labels is None and data["all"].captions == [["a red thing"], ["a blue one"]]
    with pytest.raises(UserError, match=r"neither labels nor captions"):
        read(tmp_path, label_column=None)


def test_bad_rows_stop_or_are_skipped(hf, tmp_path):
    good = images(1)[0]
    rows = {"image": [{"bytes": png(good), "path": None}, {"bytes": b"not a png", "path": None},
                      None, {"bytes": png(good), "path": None}],
            "label": [0, 1, 2, -1]}
    features = hf.Features({"image": hf.Image(), "label": hf.ClassLabel(names=NAMES)})
    hf.Dataset.from_dict(rows, features=features).save_to_disk(tmp_path / "bad")
    arrow = tmp_path / "bad" / "data-00000-of-00001.arrow"
    with pytest.raises(UserError, match=rf"{arrow} row 1: the image in column 'image' cannot be decoded"):
        read(tmp_path / "bad")
    data = read(tmp_path / "bad", bad_samples="skip")
    assert data["all"].labels.tolist() == [0] and data["all"].report.kept == 1
    assert data["all"].report.skipped == {"undecodable image": 1, "missing image": 1, "missing label": 1}

def test_an_image_stored_as_a_path_only_is_read_from_that_file_or_refused(hf, tmp_path):
    outside = tmp_path / "elsewhere" / "x.png"
    outside.parent.mkdir()
    pixels = images(2)
    outside.write_bytes(png(pixels[1]))
    rows = {"image": [{"bytes": png(pixels[0]), "path": None}, {"bytes": None, "path": str(outside)}],
            "label": [0, 1]}
    features = hf.Features({"image": hf.Image(), "label": hf.ClassLabel(names=NAMES)})
    # to_parquet keeps an image given by path as that path only (save_to_disk would embed its bytes)
    hf.Dataset.from_dict(rows, features=features).to_parquet(str(tmp_path / "paths" / "train-0.parquet"))
    assert torch.equal(read(tmp_path / "paths")["train"].images[1], chw(pixels[1]))
    outside.unlink()
    with pytest.raises(UserError, match=rf"train-0.parquet row 1: the image has only a path \('{outside}'\), which "
                                        r"is not a file here.*save_to_disk"):
        read(tmp_path / "paths")


def test_missing_columns_and_folders(hf, tmp_path):
    dataset(hf, [0], images(1)).save_to_disk(tmp_path / "ds")
    with pytest.raises(UserError, match=r"no column 'img'.*Did you mean 'image'"):
        read(tmp_path / "ds", image_column="img")
    with pytest.raises(UserError, match=r"no column 'labels'.*label_column: null"):
        read(tmp_path / "ds", label_column="labels")
    with pytest.raises(UserError, match=r"nope does not exist"):
        read(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"empty holds no dataset saved with `save_to_disk`.*no parquet"):
        read(tmp_path / "empty")


def test_damaged_files_are_named(hf, tmp_path):
    dataset(hf, [0], images(1)).save_to_disk(tmp_path / "ds")
    arrow = tmp_path / "ds" / "data-00000-of-00001.arrow"
    arrow.write_bytes(arrow.read_bytes()[:40])
    with pytest.raises(UserError, match=rf"{arrow} cannot be read as an Arrow stream file"):
        read(tmp_path / "ds")
    (tmp_path / "pq").mkdir()
    (tmp_path / "pq" / "train-0.parquet").write_bytes(b"PAR1 nonsense")
    with pytest.raises(UserError, match=r"train-0\.parquet cannot be read as a parquet file"):
        read(tmp_path / "pq")


def test_missing_pyarrow_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(UserError, match=r"pip install 'transferlab\[datasets\]'"):
        read(tmp_path)


def test_load_splits_uses_the_published_validation_split(hf, tmp_path):
    test = images(2)
    hf.DatasetDict({"train": dataset(hf, [0, 1, 2, 0], images(4)), "validation": dataset(hf, [1], images(1)),
                    "test": dataset(hf, [2, 0], test)}).save_to_disk(tmp_path / "dd")
    splits = load_splits("mine", spec(tmp_path / "dd"), 5, 3)
    assert [len(splits[role]) for role in ("train", "val", "test")] == [4, 1, 2]
    assert splits["val"].labels.tolist() == [1] and splits["test"].labels.tolist() == [2, 0]
    assert torch.equal(splits["test"].images[1], chw(test[1]))
