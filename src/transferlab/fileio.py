"""Crash-safe file writes: a file is either its old self or its complete new self, never half-written."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


def fsync_dir(path: Path) -> None:
    """Make a rename or creation inside `path` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sha256_file(path: str | Path) -> str:
    """The SHA-256 of a file's bytes (hex), read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def temp_path(path: Path) -> Path:
    """A hidden name beside `path` for writing it before `commit`."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def commit(tmp: Path, path: Path, durable: bool = True) -> Path:
    """Rename a fully written temporary file over `path`. Durable: fsync the file first and its folder after,
    so the new content also survives a power cut; without, a process killed at any point still leaves the
    old or the new file whole, and the OS writes it back in its own time."""
    if durable:
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
    os.replace(tmp, path)
    if durable:
        fsync_dir(path.parent)
    return path


@contextmanager
def atomic_open(path: str | Path, durable: bool = True) -> Iterator[BinaryIO]:
    """A binary file to write `path` through: renamed into place when the block ends without error,
    removed otherwise, so `path` keeps its old content on any failure (`commit` says what durable adds)."""
    path = Path(path)
    tmp = temp_path(path)
    try:
        with open(tmp, "wb") as handle:
            yield handle
        commit(tmp, path, durable)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(path: str | Path, data: str | bytes) -> Path:
    with atomic_open(path) as handle:
        handle.write(data.encode("utf-8") if isinstance(data, str) else data)
    return Path(path)


def read_jsonl_log(path: str | Path) -> list[dict]:
    """The records of an append-only JSONL log (a run's metrics.jsonl), skipping a torn last line left by a
    crash; none when the file does not exist."""
    if not Path(path).is_file():
        return []
    records = []
    for text in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(text))
        except ValueError:
            continue
    return records
