"""Read CIFAR-10 and CIFAR-100 in their binary version (https://www.cs.toronto.edu/~kriz/cifar.html).

A binary file is a run of fixed-size records: the label byte(s), then 3,072 pixel bytes, the red, green and
blue 32x32 planes one after another, each row by row. CIFAR-10 (`cifar-10-batches-bin`): data_batch_1..5.bin
make the train split, test_batch.bin the test split, one label byte a record, class names in
batches.meta.txt. CIFAR-100 (`cifar-100-binary`): train.bin and test.bin, a coarse then a fine label byte a
record, class names in coarse_label_names.txt and fine_label_names.txt. The files are read whole with numpy
and resized in chunks. The python version (pickles) is refused, never unpickled.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from transferlab.config import CifarSource
from transferlab.data.dataset import ImageTextData
from transferlab.data.images import resize_tensor
from transferlab.data.memory import check_fits
from transferlab.data.samples import PROGRESS_AFTER, template_captions
from transferlab.errors import UserError

PIXELS = 3 * 32 * 32
CHUNK = 2048  # images resized at a time: bounds the float copy a resize needs
DOWNLOAD = "https://www.cs.toronto.edu/~kriz/cifar.html"
LAYOUTS = {
    "CIFAR-10": {"train": [f"data_batch_{i}.bin" for i in range(1, 6)], "test": ["test_batch.bin"]},
    "CIFAR-100": {"train": ["train.bin"], "test": ["test.bin"]},
}
PICKLED = ("data_batch_1", "test_batch", "batches.meta", "meta")  # files of the python versions


def read_cifar(spec: CifarSource, name: str, size: int, channels: int) -> dict[str, ImageTextData]:
    """{'train': ..., 'test': ...} with images resized to [channels, size, size] and labels indexing the class
    names of the dataset's names file (CIFAR-100: fine or coarse, as `spec.labels` says)."""
    folder, kind = _find(Path(spec.root).expanduser(), name)
    if kind == "CIFAR-10":
        if spec.labels == "coarse":
            raise UserError(f"Dataset '{name}': {folder} is CIFAR-10, which has no coarse labels (only CIFAR-100 "
                            f"has superclasses). Remove `datasets.{name}.labels` or set it to fine.")
        names_file, record, label_byte = folder / "batches.meta.txt", 1 + PIXELS, 0
    else:
        names_file, record = folder / f"{spec.labels}_label_names.txt", 2 + PIXELS
        label_byte = 0 if spec.labels == "coarse" else 1
    classnames = _classnames(names_file)
    files = {split: [folder / file for file in listed] for split, listed in LAYOUTS[kind].items()}
    for path in (path for paths in files.values() for path in paths):
        if not path.is_file():
            raise UserError(f"{path} is missing: the binary {kind} has {', '.join(sum(LAYOUTS[kind].values(), []))}. "
                            f"Download and extract the binary version again ({DOWNLOAD}).")
    sizes = {path: path.stat().st_size for paths in files.values() for path in paths}
    for path, bytes_ in sizes.items():
        if bytes_ == 0 or bytes_ % record:
            raise UserError(f"{path}: its {bytes_} bytes are not a whole number of {record}-byte {kind} records: the "
                            f"file is truncated or not the binary version. Download and extract the binary version "
                            f"again ({DOWNLOAD}).")
    check_fits(sum(sizes.values()) // record, channels, size, name, str(folder))
    return {split: _read_split(name, paths, record, label_byte, classnames, names_file, spec.templates, size, channels)
            for split, paths in files.items()}


def _read_split(name: str, paths: list[Path], record: int, label_byte: int, classnames: list[str], names_file: Path,
                templates: list[str] | None, size: int, channels: int) -> ImageTextData:
    count = sum(path.stat().st_size // record for path in paths)
    images = torch.empty((count, channels, size, size), dtype=torch.uint8)
    labels = torch.empty(count, dtype=torch.long)
    done = 0
    with tqdm(total=count, desc=paths[0].parent.name, unit=" images", disable=count <= PROGRESS_AFTER,
              leave=False) as bar:
        for path in paths:
            records = np.fromfile(path, dtype=np.uint8).reshape(-1, record)
            label = records[:, label_byte]
            wrong = np.flatnonzero(label >= len(classnames))
            if wrong.size:
                raise UserError(f"{path}: record {wrong[0]} has label {label[wrong[0]]}, but {names_file} names only "
                                f"{len(classnames)} classes: the file is damaged or not the binary version. Download "
                                f"and extract the binary version again ({DOWNLOAD}).")
            labels[done:done + len(records)] = torch.from_numpy(label.astype(np.int64))
            pixels = records[:, record - PIXELS:].reshape(-1, 3, 32, 32)
            for start in range(0, len(records), CHUNK):
                chunk = torch.from_numpy(pixels[start:start + CHUNK]).float().div_(255)
                images[done + start:done + start + len(chunk)] = resize_tensor(chunk, size, channels)
                bar.update(len(chunk))
            done += len(records)
    captions = [[] for _ in range(count)]
    if templates:
        captions = template_captions(captions, labels.tolist(), classnames, templates, name)
    data = ImageTextData(name=name, images=images, captions=captions, labels=labels, classnames=classnames,
                         classnames_from=str(names_file))
    data.report.kept = count
    return data


def _find(root: Path, name: str) -> tuple[Path, str]:
    """The folder of binary files — `root` itself or its one CIFAR sub-folder — and which CIFAR it is."""
    if not root.is_dir():
        raise UserError(f"Dataset '{name}': {root} is not a folder. Set `datasets.{name}.root` to the extracted "
                        f"binary version's folder (cifar-10-batches-bin or cifar-100-binary) or the folder holding it.")
    candidates = [root, *sorted(sub for sub in root.iterdir() if sub.is_dir() and not sub.name.startswith("."))]
    found = [(folder, kind) for folder in candidates for kind, layout in LAYOUTS.items()
             if any((folder / file).is_file() for file in sum(layout.values(), []))]
    if len(found) == 1:
        return found[0]
    if found:
        raise UserError(f"{root} holds {len(found)} CIFAR datasets ({', '.join(str(f) for f, _ in found)}). Point "
                        f"`datasets.{name}.root` at the one to read.")
    for folder in candidates:
        pickled = next((folder / file for file in PICKLED if (folder / file).is_file()), None)
        if pickled is not None:
            raise UserError(f"{pickled} belongs to the python version of CIFAR (pickled batches), which transferlab "
                            f"never unpickles. Download the binary version (cifar-10-binary.tar.gz or "
                            f"cifar-100-binary.tar.gz from {DOWNLOAD}), extract it and point `datasets.{name}.root` "
                            f"at it.")
    tarballs = sorted(path.name for path in root.glob("cifar-*.tar.gz"))
    hint = f" Extract {tarballs[0]} first (tar xzf)." if tarballs else ""
    raise UserError(f"{root} holds no CIFAR binary files (CIFAR-10: data_batch_1.bin ... test_batch.bin; CIFAR-100: "
                    f"train.bin, test.bin).{hint} Set `datasets.{name}.root` to the extracted binary version "
                    f"(cifar-10-batches-bin or cifar-100-binary, from {DOWNLOAD}).")


def _classnames(path: Path) -> list[str]:
    try:
        names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    except FileNotFoundError:
        raise UserError(f"{path} is missing: the binary version ships its class names in it. Download and extract "
                        f"the binary version again ({DOWNLOAD}).") from None
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"{path} cannot be read as text ({err}). Download and extract the binary version again "
                        f"({DOWNLOAD}).") from None
    names = [line for line in names if line]
    if not names:
        raise UserError(f"{path} names no classes. Download and extract the binary version again ({DOWNLOAD}).")
    return names
