"""Read an ImageFolder tree, `<root>/<class>/<image>` or `<root>/<split>/<class>/<image>`, as torchvision's
`ImageFolder` reads it: class names are the sorted class folder names, images are listed class by class in
the order of a sorted walk (sub-folders of a class folder included, symlinks followed), and a file is an
image by its extension (torchvision's IMG_EXTENSIONS, any case).

Two deliberate differences: hidden files and folders (`.ipynb_checkpoints`, `.DS_Store`) are ignored rather
than read as a class or an image, and an empty class folder is a class without images rather than an error.
All split folders share one class list (the train split's), so a class missing from the test split keeps
its index.
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path

import torch

from transferlab.config import ImageFolderSource
from transferlab.data.dataset import ImageTextData
from transferlab.data.images import BadImage, decode_image
from transferlab.data.lazy import LazyImages
from transferlab.data.memory import STREAM_ABOVE_BYTES, check_fits
from transferlab.data.report import BadSamples, DataReport
from transferlab.data.samples import Sample, assemble, progress
from transferlab.data.splits import VAL_NAMES
from transferlab.errors import UserError

log = logging.getLogger(__name__)

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")  # torchvision's
SPLIT_NAMES = ("train", "test", *VAL_NAMES)


def read_imagefolder(spec: ImageFolderSource, name: str, size: int, channels: int) -> dict[str, ImageTextData]:
    """The tree's splits by folder name ('all' without split folders), images decoded to [C, size, size] or,
    streamed, as LazyImages of whole files; labels index the class list shared by all splits."""
    root = Path(spec.root).expanduser()
    if not root.is_dir():
        raise UserError(f"Dataset '{name}': the ImageFolder root {root} is not a folder. Set `datasets.{name}.root` "
                        f"to a folder of class folders (<root>/<class>/<image>) or of split folders "
                        f"(<root>/train/<class>/<image>, <root>/test/...).")
    root = root.resolve()
    folders = _layout(root)
    classes = {split: _subfolders(folder) for split, folder in folders.items()}
    classnames = _classnames(name, root, folders, classes)
    ignored: list[Path] = []
    files = {split: _images(folder, classes[split], classnames, ignored) for split, folder in folders.items()}
    if ignored:
        log.info("dataset %s: %d file(s) in %s are not images by their extension (%s) and were ignored, e.g. %s",
                 name, len(ignored), root, " ".join(IMG_EXTENSIONS), ignored[0])
    total = sum(len(listed) for listed in files.values())
    stream = spec.stream if spec.stream != "auto" else total * channels * size**2 > STREAM_ABOVE_BYTES
    if not stream:
        check_fits(total, channels, size, name, str(root), streams=True)
    known_from = f"the class folders of {root}"
    return {split: _read_split(spec, name, folders[split], listed, classnames, known_from, size, channels, stream)
            for split, listed in files.items()}


def _read_split(spec: ImageFolderSource, name: str, folder: Path, listed: list[tuple[Path, int]],
                classnames: list[str], known_from: str, size: int, channels: int, stream: bool) -> ImageTextData:
    bad = BadSamples(name, spec.bad_samples, DataReport(), "image")
    samples, paths = [], []
    for path, label in progress(listed, folder.name, len(listed)):
        if stream:
            samples.append(Sample(len(paths), [], str(label), str(path)))
            paths.append(str(path))
            continue
        try:
            samples.append(Sample(decode_image(path, size, channels), [], str(label), str(path)))
        except BadImage as err:
            bad(err.reason, str(path), f"the image cannot be decoded: {err}")
    # labels are passed as class indices: a class folder named '3' need not be class 3
    return assemble(name, str(folder), samples, bad, spec.templates, True, known=classnames, known_from=known_from,
                    stack=functools.partial(LazyImages.whole_files, paths) if stream else torch.stack)


def _subfolders(folder: Path) -> list[str]:
    """The sorted names of the folders in `folder` (symlinks to folders too), hidden ones left out."""
    return sorted(entry.name for entry in os.scandir(folder) if entry.is_dir() and not entry.name.startswith("."))


def _layout(root: Path) -> dict[str, Path]:
    """{split: folder} when every folder in root is named as a split and holds class folders, else {'all': root}."""
    subfolders = _subfolders(root)
    if not subfolders:
        raise UserError(f"{root} holds no class folders: an ImageFolder tree keeps each class's images in a folder "
                        f"named after the class (<root>/<class>/<image>), or such class folders in split folders "
                        f"(<root>/train/<class>/<image>).")
    splits = [sub for sub in subfolders if sub in SPLIT_NAMES and _subfolders(root / sub)]
    if len(splits) == len(subfolders):
        return {split: root / split for split in splits}
    if splits:
        log.warning("%s: folder(s) %s look like split folders, but %s do not, so every folder is read as a class",
                    root, splits, [sub for sub in subfolders if sub not in splits])
    return {"all": root}


def _classnames(name: str, root: Path, folders: dict[str, Path], classes: dict[str, list[str]]) -> list[str]:
    """The train split's class folders (all splits' without one); another split may lack a class, not add one."""
    if "train" not in classes:
        return sorted(set().union(*classes.values()))
    known = set(classes["train"])
    for split, names in classes.items():
        extra = [cls for cls in names if cls not in known]
        if extra:
            raise UserError(f"Dataset '{name}': {folders[split]} has class folder(s) {', '.join(extra[:5])} that "
                            f"{root / 'train'} lacks, so their images have no class index the train split knows. "
                            f"Add those classes to the train split, or remove them from the '{split}' split.")
    return classes["train"]


def _images(folder: Path, classes: list[str], classnames: list[str],
            ignored: list[Path]) -> list[tuple[Path, int]]:
    """(image path, class index) in torchvision's order: class by class, a sorted walk of each class folder."""
    index = {cls: i for i, cls in enumerate(classnames)}
    listed = []
    for cls in classes:
        for directory, names in _walk(folder / cls):
            for file in sorted(names):
                if file.startswith("."):
                    continue
                if file.lower().endswith(IMG_EXTENSIONS):
                    listed.append((Path(directory) / file, index[cls]))
                else:
                    ignored.append(Path(directory) / file)
    return listed


def _walk(top: Path) -> list[tuple[str, list[str]]]:
    """(folder, file names) under `top`, sorted by folder path as torchvision's `sorted(os.walk(...))`; symlinks
    followed, each real folder once (a symlink loop ends), hidden folders left out."""
    seen, found = set(), []
    for directory, dirs, names in os.walk(top, followlinks=True):
        real = os.path.realpath(directory)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found.append((directory, names))
    return sorted(found)
