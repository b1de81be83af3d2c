"""Where each member of an uncompressed tar lies, read straight from its 512-byte headers.

Curation reads every sample of a pool twice (to count, then to copy the kept ones), so it parses headers
itself instead of going through `tarfile`: a header's name, size and type are a few slices of bytes, and a
kept sample is copied as the very byte ranges that hold its members (header, data, padding), never
re-encoded. Headers are checked as `tarfile` checks them (the checksum, all headers of a shard at once with
numpy); GNU long names and pax `path`/`size` records are honoured; anything else unusual (a member that
is not a regular file, a name with '..' or a leading '/') is reported as unsafe and not used. A header
that fails its checksum, or a member running past the end of the file, ends the shard there as corrupt.

Nothing here imports torch: curation's worker processes stay small and start fast.
"""

from __future__ import annotations

import importlib
import mmap
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

BLOCK = 512
KEY_EXT = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")  # webdataset's rule: the key ends at the name's first dot
REGULAR, DIRECTORY = (ord("0"), 0, ord("7")), ord("5")
LONG_NAME, PAX, GLOBAL_PAX = ord("L"), ord("x"), ord("g")
ZERO_BLOCK = bytes(BLOCK)
COMPRESSIONS = {b"\x1f\x8b": "gzip", b"BZh": "bz2", b"\xfd7zXZ": "lzma"}  # magic -> stdlib module
ZSTD = b"\x28\xb5\x2f\xfd"  # compressed too, but no stdlib module reads it


def is_compressed(head: bytes) -> bool:
    """Whether a file starting with `head` (its first 6 bytes) is compressed, so has no byte ranges."""
    return head.startswith((*COMPRESSIONS, ZSTD))


class Member(NamedTuple):
    """A regular member: its name, where its data lies, and the block range (extended headers included)
    that reproduces it in another tar."""

    name: str
    offset: int  # of the data
    size: int
    start: int  # of its first header block (a long-name or pax header when it has one)
    end: int  # after its data's padding


@dataclass
class Layout:
    members: list[Member] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count
    corrupt: str | None = None  # why reading stopped early, if it did
    cut: str | None = None  # the name of the member the damage cut short, when its header could be read

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


def read_layout(data: bytes) -> Layout:
    """Every member of the tar held in `data` (bytes or an mmap), in stored order."""
    if not len(data):
        return Layout(corrupt="the file is empty")
    return _plain_layout(data) or _walk_layout(data)


def _plain_layout(data: bytes) -> Layout | None:
    """The layout of a tar of plain members (regular files and folders, names of up to 100 bytes in one
    header, checksums right), read with numpy: every block's size field is parsed at once, so following
    the chain of headers is a loop of list lookups. None for anything else (long names, pax headers,
    links, damage), which `_walk_layout` reads header by header."""
    blocks = len(data) // BLOCK
    if not blocks:
        return Layout()
    whole = np.frombuffer(data, dtype=np.uint8, count=blocks * BLOCK).reshape(-1, BLOCK)
    sizes = _octal(whole[:, 124:136])
    if sizes is None:
        return None
    steps = 1 + (sizes + BLOCK - 1) // BLOCK  # blocks from a header to the next one
    step = steps.tolist()
    chain, position = [], 0
    while position < blocks:
        chain.append(position)
        position += step[position]
    chain = np.asarray(chain, dtype=np.int64)
    empty = np.flatnonzero(~whole[chain].any(axis=1))
    if not len(empty):
        return None  # no end-of-archive blocks: leave it to the careful reader
    chain = chain[:empty[0]]
    heads = whole[chain]
    kinds = heads[:, 156]
    ends = (chain + steps[chain]) * BLOCK
    regular = np.isin(kinds, REGULAR)
    if (~regular & (kinds != DIRECTORY)).any() or heads[:, 345].any() or (ends > len(data)).any() \
            or _bad_checksums(data, (chain * BLOCK).tolist()) is not None:
        return None
    keep = np.flatnonzero(regular)
    names = heads[keep, :100].copy().view("S100").ravel().tolist()
    layout = Layout()
    if any(name[:1] == b"/" or b".." in name or name[-1:] == b"/" for name in names):  # rare: check each
        layout.members = [member for member in _members(names, chain[keep], sizes, ends[keep])
                          if _safe(member.name, layout)]
    else:
        layout.members = list(_members(names, chain[keep], sizes, ends[keep]))
    return layout


def _members(names: list[bytes], blocks: np.ndarray, sizes: np.ndarray, ends: np.ndarray) -> Iterator[Member]:
    for name, block, size, end in zip(names, blocks.tolist(), sizes[blocks].tolist(), ends.tolist(), strict=True):
        yield Member(name.decode("utf-8", "surrogateescape"), (block + 1) * BLOCK, size, block * BLOCK, end)


def _safe(name: str, layout: Layout) -> bool:
    """False for a folder entry, and (counted as unsafe) for an absolute name or one with a '..' part."""
    if name[-1:] == "/":
        return False
    if name[:1] == "/" or ".." in name.split("/"):
        layout.skip("unsafe tar member")
        return False
    return True


def _octal(fields: np.ndarray) -> np.ndarray | None:
    """The octal numbers of many size fields at once (leading spaces or zeros, digits, then NUL or space);
    None when one of them uses GNU's base-256 form (sizes of 8 GiB and more)."""
    if (fields[:, 0] & 0x80).any():
        return None
    digits = (fields >= ord("0")) & (fields <= ord("7"))
    value = np.zeros(len(fields), dtype=np.int64)
    running = np.ones(len(fields), dtype=bool)
    for column in range(fields.shape[1]):
        add = running & digits[:, column]
        value = np.where(add, value * 8 + (fields[:, column].astype(np.int64) - ord("0")), value)
        running &= digits[:, column] | ((fields[:, column] == ord(" ")) & (value == 0))
    return value


def _walk_layout(data: bytes) -> Layout:
    """Header by header: long names, pax records, links, damage."""
    layout, total, members = Layout(), len(data), []
    headers, position, start, long_name, pax = [], 0, None, None, None
    while position + BLOCK <= total:
        if data[position] == 0 and data[position:position + BLOCK] == ZERO_BLOCK:  # the end-of-archive blocks
            break
        try:
            size = pax["size"] if pax and "size" in pax else _number(data[position + 124:position + 136])
        except ValueError:
            layout.corrupt = f"an unreadable header at byte {position}"
            break
        kind = data[position + 156]
        body = position + BLOCK
        end = body + -(-size // BLOCK) * BLOCK
        if end > total:
            layout.corrupt = f"a member at byte {position} runs past the end of the file"
            layout.cut = (pax["path"] if pax and "path" in pax else long_name) or _name(data, position)
            break
        headers.append(position)
        if start is None:
            start = position
        if kind in REGULAR:
            name = (pax["path"] if pax and "path" in pax else long_name) or _name(data, position)
            if _safe(name, layout):
                members.append(Member(name, body, size, start, end))
            start, long_name, pax = None, None, None
        elif kind == LONG_NAME:
            long_name = data[body:body + size].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
        elif kind == PAX:
            pax = _pax(data[body:body + size])
        elif kind == GLOBAL_PAX:
            start = None
        else:
            if kind != DIRECTORY:
                layout.skip("unsafe tar member")
            start, long_name, pax = None, None, None
        position = end
    bad = _bad_checksums(data, headers)
    if bad is not None:
        layout.corrupt = f"a damaged header at byte {bad}"
        members = [m for m in members if m.offset - BLOCK < bad]
    layout.members = members
    return layout


def _number(raw: bytes) -> int:
    if raw[0] & 0x80:  # GNU base-256 for sizes of 8 GiB and more
        return int.from_bytes(raw[1:], "big")
    text = raw.split(b"\0", 1)[0].strip()
    return int(text, 8) if text else 0


def _name(data: bytes, position: int) -> str:
    name = data[position:position + 100].split(b"\0", 1)[0]
    if data[position + 345] and data[position + 257:position + 262] == b"ustar":
        name = data[position + 345:position + 500].split(b"\0", 1)[0] + b"/" + name
    return name.decode("utf-8", "surrogateescape")


def _pax(records: bytes) -> dict:
    """The `path` and `size` of a pax extended header (the records a reader must honour here)."""
    found, position = {}, 0
    while position < len(records):
        space = records.find(b" ", position)
        if space < 0:
            break
        length = int(records[position:space])
        key, _, value = records[space + 1:position + length - 1].partition(b"=")
        if key == b"path":
            found["path"] = value.decode("utf-8", "surrogateescape")
        elif key == b"size":
            found["size"] = int(value)
        position += length
    return found


def _bad_checksums(data: bytes, headers: list[int]) -> int | None:
    """The offset of the first header whose checksum is wrong (as tarfile computes it: the header's bytes
    summed, its checksum field counted as spaces, unsigned or signed), or None."""
    if not headers:
        return None
    blocks = header_blocks(data, headers)
    field_ = blocks[:, 148:156]
    unsigned = blocks.sum(axis=1, dtype=np.int64) - field_.sum(axis=1, dtype=np.int64) + 8 * 32
    signed = blocks.view(np.int8).sum(axis=1, dtype=np.int64) - field_.view(np.int8).sum(axis=1, dtype=np.int64) + 256
    stored = _octal(field_)
    wrong = np.flatnonzero((stored != unsigned) & (stored != signed))
    return int(headers[wrong[0]]) if len(wrong) else None


def header_blocks(data: bytes, offsets, width: int = BLOCK) -> np.ndarray:
    """The first `width` bytes of the 512-byte blocks at `offsets` (multiples of 512), uint8 [n, width]."""
    whole = np.frombuffer(data, dtype=np.uint8, count=len(data) // BLOCK * BLOCK).reshape(-1, BLOCK)
    return whole[np.asarray(offsets, dtype=np.int64) // BLOCK, :width]


def group_samples(layout: Layout, counted: Callable[[str], bool] | None = None) -> list[tuple[str, dict[str, Member]]]:
    """Consecutive members with one key as samples (webdataset's rule), each {extension: member}; a name
    with no extension is left out, and a repeated extension within a sample keeps the first (counted). A
    shard that ends corrupt loses the sample being read when the damage began: it may be incomplete (the
    sample of the member cut short; after a damaged header, whose name is unknown, the last one). `counted`
    says which extensions' repeats are counted (default: all)."""
    samples: list[tuple[str, dict[str, Member]]] = []
    for member in layout.members:
        name = member.name
        base = name.rfind("/") + 1
        dot = name.find(".", base)
        if dot > base:  # the common case of KEY_EXT's split, without the regular expression's cost
            key, ext = name[:dot], name[dot + 1:]
        else:
            match = KEY_EXT.match(name)
            if match is None:
                continue
            key, ext = match.groups()
        if ext.startswith("__"):
            continue
        if not samples or samples[-1][0] != key:
            samples.append((key, {}))
        if ext in samples[-1][1]:
            if counted is None or counted(ext):
                layout.skip("duplicate tar member")
        else:
            samples[-1][1][ext] = member
    if layout.corrupt and samples:
        cut = KEY_EXT.match(layout.cut or "")
        if layout.cut is None or (cut is not None and cut[1] == samples[-1][0]):
            samples.pop()
    return samples


class UnreadableShard(Exception):
    """A shard that cannot be opened ("unreachable shard") or decompressed ("corrupt shard")."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


@contextmanager
def shard_bytes(path: Path) -> Iterator[bytes]:
    """The uncompressed bytes of a tar shard: the file mapped into memory, or, for a gzip, bzip2 or xz
    shard, decompressed into it (whole: a compressed shard has no byte ranges to map). UnreadableShard,
    raised before anything is yielded, says why there are none."""
    try:
        file = open(path, "rb")
    except OSError as err:
        raise UnreadableShard("unreachable shard", f"{path} cannot be opened ({err})") from None
    with file:
        head = file.read(6)
        opener = next((module for magic, module in COMPRESSIONS.items() if head.startswith(magic)), None)
        if opener is not None:
            file.seek(0)
            try:
                data = importlib.import_module(opener).decompress(file.read())
            except Exception as err:  # noqa: BLE001 -- each module has its own errors (zlib, lzma, EOF, OSError)
                raise UnreadableShard("corrupt shard", f"{path} cannot be decompressed ({err})") from None
            yield data
            return
        if os.fstat(file.fileno()).st_size == 0:
            yield b""
            return
        with mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            yield mapped
