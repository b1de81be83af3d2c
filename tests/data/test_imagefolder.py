"""ImageFolder trees: labels, class order and sample order as torchvision's ImageFolder, split folders sharing
one class list, streaming, and every bad input."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.datasets import ImageFolder

from transferlab.config import ImageFolderSource
from transferlab.data.lazy import LazyImages
from transferlab.data.readers import imagefolder
from transferlab.data.readers.imagefolder import read_imagefolder
from transferlab.data.readers.sources import load_splits
from transferlab.data.tar.remote import RangeReader
from transferlab.errors import UserError


def image(path: Path, value: int, mode: str = "RGB") -> Path:
    """A 4x4 image of one colour derived from `value`, so every image of a test is told apart by its pixels."""
    path.parent.mkdir(parents=True, exist_ok=True)
    color = (value * 7 % 256, value * 13 % 256, value * 29 % 256)
    Image.new(mode, (4, 4), color if mode == "RGB" else color[0]).save(path, format="PNG")
    return path


def tree(root: Path, layout: dict[str, list[str]], start: int = 0) -> Path:
    """Class folder (or 'split/class') → file names, each written as a distinct image."""
    for value, (folder, names) in enumerate(((f, n) for f, ns in layout.items() for n in ns), start):
        image(root / folder / names, value)
    return root


def spec(root: Path, **options) -> ImageFolderSource:
    return ImageFolderSource(source="imagefolder", root=str(root), **options)


def read(root: Path, size=4, channels=3, **options):
    return read_imagefolder(spec(root, **options), "mine", size, channels)


def pixels(img: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(img.convert("RGB")).transpose(2, 0, 1).copy())


# Class names whose string order is not their numeric or case-blind order, an upper-case extension, images in
# a sub-folder of a class folder, and a file that is not an image.
MESSY = {"b": ["2.png", "10.png", "1.PNG"], "a": ["x.jpeg", "sub/y.png", "sub/deeper/z.png", "sub-x/v.png", "w.png"],
         "10": ["q.bmp"], "9": ["p.png"], "B": ["r.webp"], "C": ["s.tif"]}


def test_classes_labels_order_and_pixels_match_torchvision(tmp_path):
    root = tree(tmp_path / "flat", MESSY)
    (root / "a" / "notes.txt").write_text("not an image")
    reference = ImageFolder(str(root))
    data = read(root)
    assert list(data) == ["all"]
    data = data["all"]
    assert data.classnames == reference.classes == ["10", "9", "B", "C", "a", "b"]
    assert data.labels.tolist() == [label for _, label in reference.samples]
    assert data.classnames_from == f"the class folders of {root.resolve()}"
    assert data.images.dtype == torch.uint8 and data.images.shape == (len(reference), 3, 4, 4)
    for i in range(len(reference)):
        assert torch.equal(data.images[i], pixels(reference[i][0])), reference.samples[i][0]
    assert data.captions == [[]] * len(reference)  # label-only data: no captions without templates
    streamed = read(root, stream=True)["all"]
    assert isinstance(streamed.images, LazyImages)
    assert streamed.images.sources == [str(Path(path).resolve()) for path, _ in reference.samples]
    assert torch.equal(streamed.labels, data.labels)
    assert torch.equal(streamed.images.decode(3, 4, 3, RangeReader()), data.images[3])


def test_split_folders_share_the_train_class_list(tmp_path):
    root = tree(tmp_path / "ds", {"train/cat": ["1.png", "2.png"], "train/dog": ["3.png"], "train/emu": ["4.png"],
                                  "test/cat": ["5.png"], "test/emu": ["6.png", "7.png"], "val/dog": ["8.png"]})
    (root / "test" / "dog").mkdir()  # an empty class folder is a class without images
    data = read(root)
    assert sorted(data) == ["test", "train", "val"]
    for split in data:
        assert data[split].classnames == ["cat", "dog", "emu"]
    assert data["train"].labels.tolist() == [0, 0, 1, 2]
    assert data["test"].labels.tolist() == [0, 2, 2]  # emu keeps index 2 though test has only two classes
    assert data["val"].labels.tolist() == [1]
    reference = ImageFolder(str(root / "train"))
    assert data["train"].labels.tolist() == [label for _, label in reference.samples]
    for i in range(len(reference)):
        assert torch.equal(data["train"].images[i], pixels(reference[i][0]))


def test_a_test_split_without_train_uses_the_union_of_classes(tmp_path):
    root = tree(tmp_path / "ds", {"val/b": ["1.png"], "test/a": ["2.png"], "test/c": ["3.png"]})
    data = read(root)
    assert data["val"].classnames == data["test"].classnames == ["a", "b", "c"]
    assert data["val"].labels.tolist() == [1] and data["test"].labels.tolist() == [0, 2]


def test_a_class_the_train_split_lacks_is_refused(tmp_path):
    root = tree(tmp_path / "ds", {"train/a": ["1.png"], "test/a": ["2.png"], "test/zebra": ["3.png"]})
    with pytest.raises(UserError, match=r"test.*zebra.*train"):
        read(root)


def test_hidden_and_other_files_are_ignored_and_counted(tmp_path, caplog):
    root = tree(tmp_path / "ds", {"a": ["1.png", ".hidden.png"], ".ipynb_checkpoints": ["x.png"], "b": ["2.png"]})
    image(root / "a" / ".cache" / "3.png", 3)
    (root / "a" / "labels.csv").write_text("x")
    (root / "b" / "README").write_text("x")
    with caplog.at_level(logging.INFO, logger="transferlab.data.readers.imagefolder"):
        data = read(root)["all"]
    assert data.classnames == ["a", "b"] and data.labels.tolist() == [0, 1]
    assert [r.getMessage() for r in caplog.records if "not images" in r.getMessage()] == \
        [f"dataset mine: 2 file(s) in {root.resolve()} are not images by their extension "
         f"({' '.join(imagefolder.IMG_EXTENSIONS)}) and were ignored, e.g. {root.resolve() / 'a' / 'labels.csv'}"]


def test_split_names_beside_other_folders_are_classes(tmp_path, caplog):
    root = tree(tmp_path / "ds", {"train/a": ["1.png"], "extra/a": ["2.png"]})
    with caplog.at_level(logging.WARNING):
        data = read(root)
    assert list(data) == ["all"] and data["all"].classnames == ["extra", "train"]
    assert "look like split folders" in caplog.text


def test_templates_make_captions_and_grey_images(tmp_path):
    root = tree(tmp_path / "ds", {"cat": ["1.png"], "dog": ["2.png"]})
    data = read(root, channels=1, templates=["a photo of a {}.", "a {c}"])["all"]
    assert data.images.shape == (2, 1, 4, 4)
    assert data.captions == [["a photo of a cat.", "a cat"], ["a photo of a dog.", "a dog"]]


def test_undecodable_images_stop_or_are_skipped(tmp_path):
    root = tree(tmp_path / "ds", {"a": ["1.png"], "b": ["2.png"]})
    (root / "b" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(UserError, match=r"broken\.png.*cannot be decoded.*bad_samples: skip"):
        read(root)
    data = read(root, bad_samples="skip")["all"]
    assert data.labels.tolist() == [0, 1] and data.report.kept == 2
    assert data.report.skipped == {"undecodable image": 1}


def test_missing_root_and_a_root_without_class_folders(tmp_path):
    with pytest.raises(UserError, match=r"nope is not a folder.*datasets\.mine\.root"):
        read(tmp_path / "nope")
    image(tmp_path / "loose" / "1.png", 1)
    with pytest.raises(UserError, match=r"loose holds no class folders"):
        read(tmp_path / "loose")


def test_a_split_with_only_empty_class_folders_is_refused(tmp_path):
    root = tree(tmp_path / "ds", {"train/a": ["1.png"]})
    (root / "test" / "a").mkdir(parents=True)
    with pytest.raises(UserError, match=r"test holds no samples"):
        read(root)


def test_stream_auto_streams_above_the_threshold(tmp_path, monkeypatch):
    root = tree(tmp_path / "ds", {"a": ["1.png"], "b": ["2.png"]})
    assert isinstance(read(root)["all"].images, torch.Tensor)
    monkeypatch.setattr(imagefolder, "STREAM_ABOVE_BYTES", 2 * 3 * 4 * 4 - 1)
    assert isinstance(read(root)["all"].images, LazyImages)
    assert isinstance(read(root, stream=False)["all"].images, torch.Tensor)


def test_load_splits_keeps_the_published_splits(tmp_path):
    root = tree(tmp_path / "ds", {f"train/{c}": [f"{i}.png" for i in range(10)] for c in "ab"})
    tree(root, {"test/a": ["t1.png"], "test/b": ["t2.png", "t3.png"]}, start=100)
    splits = load_splits("mine", spec(root, val_fraction=0.2), 4, 3)
    assert sorted(splits) == ["test", "train", "val"]
    assert len(splits["train"]) == 16 and len(splits["val"]) == 4 and len(splits["test"]) == 3
    assert splits["val"].labels.bincount().tolist() == [2, 2]  # held out stratified
    assert splits["test"].labels.tolist() == [0, 1, 1]
    assert torch.equal(splits["test"].images[0], pixels(Image.open(root / "test" / "a" / "t1.png")))
