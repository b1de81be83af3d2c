"""Reading shards and images by byte range, from local files or from URLs through fsspec.

A streamed sample is read as one byte range of its shard (`RangeReader.read`): `os.pread` on a local file,
a seek and a read (an HTTP range request, an S3 ranged GET) on a URL. A server that cannot answer range
requests (`python -m http.server`, some static hosts) has each of its shards downloaded once, whole, into
the cache folder (TRANSFERLAB_CACHE, default ~/.cache/transferlab; shared by the loader workers, written
under a temporary name and renamed), and read there. Each process keeps its open files in a small cache,
so a loader worker opens a shard once, not once per sample. `stamp` identifies a shard's
version (size and modification time, or the server's ETag), so a shard that changed after it was indexed
is noticed instead of read at stale offsets.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections import OrderedDict
from pathlib import Path

from transferlab.errors import UserError

OPEN_FILES = 32  # per process; a pool has more shards than a process should hold open


def is_url(source: str | Path) -> bool:
    """Whether `source` is a URL with a scheme other than file:// (which is read as a local path)."""
    return isinstance(source, str) and "://" in source and not source.startswith("file://")


def local_path(source: str | Path) -> str:
    return str(source).removeprefix("file://") if isinstance(source, str) else str(source)


def _filesystem(url: str):
    try:
        import fsspec
    except ImportError:
        raise UserError(f"Reading {url} needs fsspec: pip install fsspec (and s3fs or gcsfs for s3:// or gs://).") \
            from None
    try:
        return fsspec.core.url_to_fs(url)[0]
    except (ImportError, ValueError) as err:
        raise UserError(f"Cannot read {url}: {err}. Install the fsspec backend for its scheme (s3fs for s3://, "
                        f"gcsfs for gs://, aiohttp for http(s)://).") from None


def open_url(url: str, sequential: bool = False):
    """A binary file object for `url`, read by range, or, `sequential`, front to back with one request: over
    HTTP that asks the server for no range, which some cannot answer (`python -m http.server`: fsspec's
    range-reading file fails there once a file is larger than its 5 MB blocks)."""
    try:
        filesystem = _filesystem(url)
        http = url.split("://", 1)[0].lower() in ("http", "https")
        return filesystem.open(url, "rb", block_size=0) if sequential and http else filesystem.open(url, "rb")
    except (OSError, ValueError) as err:
        raise OSError(f"cannot open {url} ({type(err).__name__}: {err})") from err


def stamp(source: str | Path) -> str:
    """A string that changes when the file at `source` does: size and mtime, or size and ETag for a URL."""
    if is_url(source):
        info = _filesystem(str(source)).info(str(source))
        return f"{info.get('size')}:{info.get('ETag') or info.get('etag') or info.get('mtime') or ''}"
    status = os.stat(local_path(source))
    return f"{status.st_size}:{status.st_mtime_ns}"


def cache_folder() -> Path:
    return Path(os.environ.get("TRANSFERLAB_CACHE") or Path.home() / ".cache" / "transferlab")


def downloaded(url: str) -> str:
    """The local copy of the shard at `url` in the cache folder (one per version of the shard), fetched whole
    on first use."""
    version = hashlib.sha256(f"{url}\n{stamp(url)}".encode()).hexdigest()[:24]
    path = cache_folder() / "shards" / f"{version}-{url.rsplit('/', 1)[-1][-60:]}"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}.part")
        with open_url(url, sequential=True) as source, open(partial, "wb") as target:
            shutil.copyfileobj(source, target, 2**20)
        os.replace(partial, path)
    return str(path)


class RangeReader:
    """Reads byte ranges of many files, keeping the most recently used ones open (one per process: file
    handles are not shared with forked loader workers, each opens its own)."""

    def __init__(self) -> None:
        self._files: OrderedDict[str, object] = OrderedDict()
        self._pid = os.getpid()

    def read(self, source: str, offset: int, size: int) -> bytes:
        handle = self._handle(source)
        if isinstance(handle, int):
            data = os.pread(handle, size, offset)
        else:
            try:
                handle.seek(offset)
                data = handle.read(size)
            except ValueError as err:  # fsspec: "The HTTP server doesn't appear to support range requests"
                if "range" not in str(err).lower():
                    raise
                self._files[source] = os.open(downloaded(source), os.O_RDONLY)
                handle.close()
                return self.read(source, offset, size)
        if len(data) != size:
            raise OSError(f"{source} ends before byte {offset + size}")
        return data

    def _handle(self, source: str):
        if self._pid != os.getpid():  # forked: the parent's descriptors are the parent's
            self._files, self._pid = OrderedDict(), os.getpid()
        if source in self._files:
            self._files.move_to_end(source)
            return self._files[source]
        while len(self._files) >= OPEN_FILES:
            _, old = self._files.popitem(last=False)
            _close(old)
        handle = open_url(source) if is_url(source) else os.open(local_path(source), os.O_RDONLY)
        self._files[source] = handle
        return handle

    def close(self) -> None:
        while self._files:
            _, handle = self._files.popitem()
            _close(handle)

    def __getstate__(self) -> dict:  # a reader is pickled into spawned workers without its open files
        return {}

    def __setstate__(self, state: dict) -> None:
        self.__init__()


def _close(handle) -> None:
    """Close a descriptor (local file) or a file object (URL)."""
    os.close(handle) if isinstance(handle, int) else handle.close()
