"""The tar shard kernels: the optional C extension `_tar` (src/transferlab/data/tar/_tar.c), or None where it is not
built or when the environment sets TRANSFERLAB_PURE_PYTHON=1; beside them, their pure-Python twins, which give
the same results (to compare the two, or to rule the extension out when something looks wrong).

Torch-free: curation's worker processes read shards through these.
"""

from __future__ import annotations

import os

import numpy as np

kernels = None
if os.environ.get("TRANSFERLAB_PURE_PYTHON") != "1":
    try:
        from transferlab.data.tar import _tar as kernels
    except ImportError:  # no C compiler at install: the pure-Python twins
        kernels = None

ASCII_SPACES = b" \t\n\v\f\r\x1c\x1d\x1e\x1f"  # what str.strip removes among ASCII bytes (the kernels' is_space)
FIXED_COLUMNS = 6  # of plain_samples' rows: start, end, key length, key hash, image offset, image size


def plain_samples(data, text_exts: tuple[bytes, ...], image_exts: tuple[bytes, ...],
                  key_state: int = 0) -> np.ndarray | None:
    """The samples of a plain tar (regular members named key.ext in single headers, as webdataset writers make
    them) as int64 rows: start, end, key length, key hash, the first image member's offset and size, then the
    offset and size of each of `text_exts` (-1: missing); see data/tar/_tar.c. None for any other tar, or where the
    kernel is not built: `layout.read_layout` and `group_samples` read those."""
    if kernels is None or not len(data):
        return None
    table = kernels.plain_samples(data, text_exts, image_exts, key_state)
    width = FIXED_COLUMNS + 2 * len(text_exts)
    return None if table is None else np.frombuffer(table, dtype=np.int64).reshape(-1, width)


def joined_captions(data, where: np.ndarray, limit: int) -> tuple[bytes, list[int]] | None:
    """The text members at `where` (int64 [n, 2]: offset, size; offset -1: none, left out), stripped of ASCII
    whitespace and joined by NUL, with the indices (among those present) that Python must finish: those that may
    start or end with a Unicode space (a non-ASCII byte at either end) or be longer than `limit` bytes. None when
    one holds a NUL (the joined text could not be split again)."""
    if kernels is not None:
        return kernels.captions(data, np.ascontiguousarray(where, dtype=np.int64).tobytes(), limit)
    parts = [bytes(data[offset:offset + size]).strip(ASCII_SPACES) for offset, size in where.tolist() if offset >= 0]
    if any(b"\0" in part for part in parts):
        return None
    flagged = [i for i, part in enumerate(parts) if part and (part[0] >= 0x80 or part[-1] >= 0x80 or len(part) > limit)]
    return b"\0".join(parts), flagged


def decoded_texts(data, where: np.ndarray, limit: int) -> tuple[str, list[str]] | None:
    """The text members at `where` (as `joined_captions`) decoded: the NUL-joined text as read, and each present
    member stripped and cut to `limit` characters. None when one is not UTF-8 or holds a NUL."""
    found = joined_captions(data, where, limit)
    if found is None:
        return None
    joined, unfinished = found
    try:
        text = joined.decode("utf-8")
    except UnicodeDecodeError:
        return None
    texts = text.split("\0") if (where[:, 0] >= 0).any() else []
    for i in unfinished:
        texts[i] = texts[i].strip()[:limit]
    return text, texts


def gather(data, offsets: np.ndarray, width: int) -> bytes:
    """The `width` bytes at each of `offsets`, back to back."""
    if kernels is not None:
        return kernels.gather(data, np.ascontiguousarray(offsets, dtype=np.int64).tobytes(), width)
    for offset in offsets.tolist():
        if offset < 0 or offset > len(data) - width:
            raise IndexError(f"offset {offset} is out of the data's {len(data)} bytes")
    return b"".join(bytes(data[offset:offset + width]) for offset in offsets.tolist())
