"""CIFAR-10 and CIFAR-100 binary files written by hand: labels, class names and pixels against images built
with PIL from the same bytes, and every bad input (truncated files, the pickled python version)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from transferlab.config import CifarSource
from transferlab.data.readers.cifar import read_cifar
from transferlab.data.readers.sources import load_splits
from transferlab.errors import UserError

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
RNG = np.random.default_rng(0)


def records(labels: list[list[int]]) -> tuple[bytes, list[bytes]]:
    """Records of the label bytes given and random pixels: (file content, the pixel bytes of each record)."""
    pixels = [RNG.integers(0, 256, 3072, dtype=np.uint8).tobytes() for _ in labels]
    return b"".join(bytes(label) + image for label, image in zip(labels, pixels, strict=True)), pixels


def cifar10(root: Path, per_batch: int = 2, test: int = 3) -> tuple[Path, dict[str, list], dict[str, list]]:
    """A CIFAR-10 binary folder: (folder, labels by split, pixel bytes by split)."""
    folder = root / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    labels, pixels = {"train": [], "test": []}, {"train": [], "test": []}
    for file, split, count in [*((f"data_batch_{i}.bin", "train", per_batch) for i in range(1, 6)),
                               ("test_batch.bin", "test", test)]:
        written = [int(label) for label in RNG.integers(0, 10, count)]
        content, images = records([[label] for label in written])
        (folder / file).write_bytes(content)
        labels[split] += written
        pixels[split] += images
    (folder / "batches.meta.txt").write_text("\n".join(CIFAR10_NAMES) + "\n\n")  # the real file ends in blank lines
    return folder, labels, pixels


def spec(root: Path, **options) -> CifarSource:
    return CifarSource(source="cifar", root=str(root), **options)


def expected(pixels: bytes) -> torch.Tensor:
    """The image as PIL builds it from the red, green and blue 32x32 planes, as uint8 [3, 32, 32]."""
    planes = [Image.frombytes("L", (32, 32), pixels[i * 1024:(i + 1) * 1024]) for i in range(3)]
    return torch.from_numpy(np.asarray(Image.merge("RGB", planes)).transpose(2, 0, 1).copy())


def test_cifar10_labels_names_and_pixels(tmp_path):
    folder, labels, pixels = cifar10(tmp_path)
    data = read_cifar(spec(folder), "c10", 32, 3)
    assert sorted(data) == ["test", "train"]
    for split in data:
        assert data[split].labels.tolist() == labels[split]
        assert data[split].classnames == CIFAR10_NAMES
        assert data[split].classnames_from == str(folder / "batches.meta.txt")
        assert data[split].images.dtype == torch.uint8 and data[split].images.shape == (len(labels[split]), 3, 32, 32)
        for i, image in enumerate(pixels[split]):
            assert torch.equal(data[split].images[i], expected(image)), (split, i)
        assert data[split].captions == [[]] * len(labels[split]) and data[split].report.kept == len(labels[split])
    assert len(data["train"]) == 10  # all five batches, in order


def test_root_may_be_the_parent_folder(tmp_path):
    cifar10(tmp_path)
    (tmp_path / "unrelated").mkdir()
    data = read_cifar(spec(tmp_path), "c10", 32, 3)
    assert data["test"].classnames_from == str(tmp_path / "cifar-10-batches-bin" / "batches.meta.txt")


def test_cifar100_fine_and_coarse_labels(tmp_path):
    folder = tmp_path / "cifar-100-binary"
    folder.mkdir()
    train, train_pixels = records([[1, 3], [0, 2], [1, 0]])
    test, _ = records([[0, 1]])
    (folder / "train.bin").write_bytes(train)
    (folder / "test.bin").write_bytes(test)
    (folder / "fine_label_names.txt").write_text("apple\nbee\ncloud\ndolphin\n")
    (folder / "coarse_label_names.txt").write_text("fruit\nanimal\n")
    fine = read_cifar(spec(tmp_path), "c100", 32, 3)
    assert fine["train"].labels.tolist() == [3, 2, 0] and fine["test"].labels.tolist() == [1]
    assert fine["train"].classnames == ["apple", "bee", "cloud", "dolphin"]
    assert fine["train"].classnames_from == str(folder / "fine_label_names.txt")
    assert torch.equal(fine["train"].images[2], expected(train_pixels[2]))
    coarse = read_cifar(spec(folder, labels="coarse"), "c100", 32, 3)
    assert coarse["train"].labels.tolist() == [1, 0, 1] and coarse["train"].classnames == ["fruit", "animal"]
    assert coarse["test"].classnames_from == str(folder / "coarse_label_names.txt")


def test_resized_and_grey_images_and_template_captions(tmp_path):
    folder, labels, _ = cifar10(tmp_path, per_batch=1, test=1)
    plain = bytes([labels["test"][0]]) + bytes([10] * 1024 + [20] * 1024 + [33] * 1024)  # one colour
    (folder / "test_batch.bin").write_bytes(plain)
    colour = read_cifar(spec(folder), "c10", 8, 3)["test"]
    assert colour.images.shape == (1, 3, 8, 8)
    assert colour.images[0, :, 0, 0].tolist() == [10, 20, 33]
    assert (colour.images[0] == colour.images[0, :, :1, :1]).all()
    grey = read_cifar(spec(folder, templates=["a photo of a {}."]), "c10", 8, 1)["test"]
    assert grey.images.shape == (1, 1, 8, 8) and grey.images.unique().tolist() == [21]
    assert grey.captions == [[f"a photo of a {CIFAR10_NAMES[labels['test'][0]]}."]]


def test_a_truncated_file_is_named(tmp_path):
    folder, _, _ = cifar10(tmp_path)
    content = (folder / "data_batch_3.bin").read_bytes()
    (folder / "data_batch_3.bin").write_bytes(content[:-100])
    with pytest.raises(UserError, match=r"data_batch_3\.bin.*truncated or not the binary version"):
        read_cifar(spec(folder), "c10", 32, 3)


def test_the_python_version_is_refused_unread(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "data_batch_1").write_bytes(b"\x80\x04not read")
    (folder / "batches.meta").write_bytes(b"\x80\x04not read")
    with pytest.raises(UserError, match=r"python version.*never unpickles.*binary version"):
        read_cifar(spec(tmp_path), "c10", 32, 3)


def test_bad_folders(tmp_path):
    with pytest.raises(UserError, match=r"nope is not a folder"):
        read_cifar(spec(tmp_path / "nope"), "c10", 32, 3)
    (tmp_path / "cifar-10-binary.tar.gz").write_bytes(b"")
    with pytest.raises(UserError, match=r"no CIFAR binary files.*Extract cifar-10-binary\.tar\.gz"):
        read_cifar(spec(tmp_path), "c10", 32, 3)
    folder, _, _ = cifar10(tmp_path)
    with pytest.raises(UserError, match=r"CIFAR-10, which has no coarse labels"):
        read_cifar(spec(folder, labels="coarse"), "c10", 32, 3)
    (folder / "data_batch_4.bin").unlink()
    with pytest.raises(UserError, match=r"data_batch_4\.bin is missing"):
        read_cifar(spec(folder), "c10", 32, 3)


def test_labels_beyond_the_names_and_a_missing_names_file(tmp_path):
    folder, _, _ = cifar10(tmp_path)
    (folder / "test_batch.bin").write_bytes(records([[3], [10]])[0])
    with pytest.raises(UserError, match=r"test_batch\.bin: record 1 has label 10.*names only 10 classes"):
        read_cifar(spec(folder), "c10", 32, 3)
    (folder / "batches.meta.txt").unlink()
    with pytest.raises(UserError, match=r"batches\.meta\.txt is missing"):
        read_cifar(spec(folder), "c10", 32, 3)


def test_load_splits_holds_val_out_of_train(tmp_path):
    folder, labels, pixels = cifar10(tmp_path, per_batch=4)
    splits = load_splits("c10", spec(folder, val_fraction=0.25), 32, 3)
    assert len(splits["train"]) + len(splits["val"]) == 20 and 0 < len(splits["val"]) < 10  # stratified by class
    assert splits["test"].labels.tolist() == labels["test"]
    assert torch.equal(splits["test"].images[1], expected(pixels["test"][1]))
    assert splits["val"].classnames == CIFAR10_NAMES
