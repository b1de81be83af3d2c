"""Generated webdataset pools of tiny image-caption pairs, written at disk speed (benchmarks/stream_scale.py).

Sample i of a pool is `<key>.png` + `<key>.txt`, key = i as 10 decimal digits: an 8x8 RGB PNG whose pixels
are a cheap function of i (`pixels`), and the caption `caption(i)`, distinct per sample and all of one length.
Shards hold `per_shard` samples (the last one the rest), uncompressed, named shard-000000.tar, ...

Nothing goes through tarfile or PIL: every sample's tar record has the same layout (512-byte ustar header, the
268-byte PNG padded to 512, header, caption padded to 512), so a shard is one uint8 array [samples, 2048] filled
from a template row; only the key digits, the pixels, the PNG's Adler-32 and IDAT CRC-32 and the two header
checksums differ per sample, and all but the CRC-32 (one zlib.crc32 call a sample) are computed for the whole
shard at once. The PNG's zlib stream is one stored (uncompressed) deflate block, which keeps its length fixed;
decoders read it as any PNG. The shard ends with two zero blocks. Shards are written by several processes.
"""

from __future__ import annotations

import json
import struct
import time
import zlib
from multiprocessing import get_context
from pathlib import Path

import numpy as np

SIDE, KEY_DIGITS, BLOCK = 8, 10, 512
RECORD = 4 * BLOCK  # per sample: header, PNG, header, caption
CAPTION = "a tiny generated picture, sample {:010d}"
RAW = SIDE * (1 + 3 * SIDE)  # PNG scanlines: a filter byte (0, none) then R, G, B per pixel
MARKER = "pool.json"  # written last: a pool folder holding it is complete


def pixels(first: int, count: int) -> np.ndarray:
    """uint8 [count, 8, 8, 3]: the images of samples first .. first + count - 1, a gradient shifted by bytes of
    i (uint8 arithmetic wraps around: everything is modulo 256)."""
    i = np.arange(first, first + count, dtype=np.int64)
    shift = [(v & 255).astype(np.uint8)[:, None, None, None] for v in (i * 37, (i >> 8) * 11, (i >> 16) * 13)]
    y, x, c = (np.arange(n, dtype=np.uint8) for n in (SIDE, SIDE, 3))
    gradient = x[None, :, None] * 32 + y[:, None, None] * 4 + c[None, None, :] * 85
    return (gradient + shift[0] * (2 * c + 1) + shift[1] * (y[:, None, None] + 1) + shift[2] * (x[None, :, None] + 1))


def caption(i: int) -> str:
    return CAPTION.format(i)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _stored_zlib(raw: bytes) -> bytes:
    """raw as a zlib stream of one final stored deflate block (what zlib.compress(raw, 0) gives)."""
    block = b"\x01" + struct.pack("<HH", len(raw), 0xFFFF ^ len(raw)) + raw
    return b"\x78\x01" + block + struct.pack(">I", zlib.adler32(raw))


SIGNATURE = b"\x89PNG\r\n\x1a\n"
IHDR = _chunk(b"IHDR", struct.pack(">IIBBBBB", SIDE, SIDE, 8, 2, 0, 0, 0))
IEND = _chunk(b"IEND", b"")
PNG_TEMPLATE = SIGNATURE + IHDR + _chunk(b"IDAT", _stored_zlib(bytes(RAW))) + IEND  # black; pixels go in later
PNG_BYTES = len(PNG_TEMPLATE)
IDAT_AT = len(SIGNATURE + IHDR) + 4  # where the chunk type "IDAT" starts; its CRC covers type and data
RAW_AT = IDAT_AT + 4 + 7  # the scanlines, after "IDAT", the zlib header and the stored block's header
ADLER_AT, CRC_AT = RAW_AT + RAW, RAW_AT + RAW + 4


def _header(name: str, size: int) -> bytes:
    """A ustar header of a regular file (mode 644, owner 0, mtime 0), checksum field still blank."""
    def octal(value: int, width: int) -> bytes:
        return b"%0*o\0" % (width - 1, value)
    fields = (name.encode().ljust(100, b"\0") + octal(0o644, 8) + octal(0, 8) + octal(0, 8) + octal(size, 12)
              + octal(0, 12) + b" " * 8 + b"0" + b"\0" * 100 + b"ustar\x0000" + b"\0" * 64 + octal(0, 8) * 2)
    return fields.ljust(BLOCK, b"\0")


def _template() -> np.ndarray:
    row = (_header("0" * KEY_DIGITS + ".png", PNG_BYTES)
           + PNG_TEMPLATE.ljust(BLOCK, b"\0")
           + _header("0" * KEY_DIGITS + ".txt", len(caption(0)))
           + caption(0).encode().ljust(BLOCK, b"\0"))
    return np.frombuffer(row, dtype=np.uint8)


TEMPLATE = _template()
KEY_AT = (0, 2 * BLOCK, 3 * BLOCK + CAPTION.index("{"))  # the key in the two member names and the caption


def _digits(numbers: np.ndarray, width: int, base: int) -> np.ndarray:
    """ASCII digits [len, width] of numbers in base (most significant first)."""
    powers = base ** np.arange(width - 1, -1, -1, dtype=np.int64)
    return (numbers[:, None] // powers % base + ord("0")).astype(np.uint8)


def _adler32(rows: np.ndarray) -> np.ndarray:
    """zlib.adler32 of each row of a uint8 array (rows of at most a few thousand bytes: no int64 overflow)."""
    a = 1 + rows.sum(axis=1, dtype=np.int64)
    b = rows.shape[1] + rows.astype(np.int64) @ np.arange(rows.shape[1], 0, -1, dtype=np.int64)
    return (b % 65521) << 16 | a % 65521


def _big_endian(values: np.ndarray) -> np.ndarray:
    return values.astype(">u4").view(np.uint8).reshape(len(values), 4)


def shard_bytes(first: int, count: int) -> np.ndarray:
    """uint8 [count * RECORD + 2 * BLOCK]: the tar shard of samples first .. first + count - 1."""
    records = np.empty((count, RECORD), dtype=np.uint8)
    records[:] = TEMPLATE
    key = _digits(np.arange(first, first + count, dtype=np.int64), KEY_DIGITS, 10)
    for at in KEY_AT:
        records[:, at:at + KEY_DIGITS] = key
    lines = records[:, BLOCK + RAW_AT:BLOCK + ADLER_AT].reshape(count, SIDE, 1 + 3 * SIDE)
    lines[:, :, 1:] = pixels(first, count).reshape(count, SIDE, 3 * SIDE)
    records[:, BLOCK + ADLER_AT:BLOCK + CRC_AT] = _big_endian(_adler32(records[:, BLOCK + RAW_AT:BLOCK + ADLER_AT]))
    flat = memoryview(records.reshape(-1))  # CRC-32 of the IDAT chunk (type and data), one sample at a time
    crcs = [zlib.crc32(flat[png + IDAT_AT:png + CRC_AT]) for png in range(BLOCK, count * RECORD, RECORD)]
    records[:, BLOCK + CRC_AT:BLOCK + CRC_AT + 4] = _big_endian(np.array(crcs, dtype=np.int64))
    for at in (0, 2 * BLOCK):  # the checksum: the header's byte sum with its own field as spaces
        total = records[:, at:at + BLOCK].sum(axis=1, dtype=np.int64)
        records[:, at + 148:at + 154] = _digits(total, 6, 8)
        records[:, at + 154] = 0
    return np.concatenate([records.reshape(-1), np.zeros(2 * BLOCK, dtype=np.uint8)])


def _write_shard(job: tuple[str, int, int]) -> int:
    path, first, count = job
    data = shard_bytes(first, count)
    with open(path, "wb") as out:
        out.write(data)
    return data.size


def pool_bytes(samples: int, per_shard: int) -> int:
    """What write_pool puts on disk for `samples` samples."""
    return samples * RECORD + -(-samples // per_shard) * 2 * BLOCK


def write_pool(folder: Path, samples: int, per_shard: int = 10_000, processes: int = 2) -> dict:
    """Shards folder/shard-000000.tar ... of samples 0 .. samples - 1, then folder/pool.json (what was written,
    seconds); the pool.json of a complete pool of the same arguments is returned as it is, nothing rewritten."""
    marker = folder / MARKER
    wanted = {"samples": samples, "per_shard": per_shard}
    if marker.exists() and {k: v for k, v in json.loads(marker.read_text()).items() if k in wanted} == wanted:
        return {**json.loads(marker.read_text()), "reused": True}
    folder.mkdir(parents=True, exist_ok=True)
    marker.unlink(missing_ok=True)
    jobs = [(str(folder / f"shard-{s:06d}.tar"), first, min(per_shard, samples - first))
            for s, first in enumerate(range(0, samples, per_shard))]
    started = time.perf_counter()
    with get_context("fork").Pool(processes) as pool:
        written = sum(pool.imap_unordered(_write_shard, jobs))
    done = {**wanted, "shards": len(jobs), "bytes": written, "processes": processes,
            "seconds": round(time.perf_counter() - started, 2),
            "pattern": str(folder / f"shard-{{000000..{len(jobs) - 1:06d}}}.tar"),
            "caption_bytes": samples * len(caption(0))}
    marker.write_text(json.dumps(done))
    return {**done, "reused": False}


def read_samples(path: str | Path):
    """(key, png bytes, caption) of each sample of a shard write_pool wrote, read by walking its ustar headers
    (a reader for these pools only: no long names, no pax headers)."""
    with open(path, "rb") as shard:
        data = shard.read()
    at, pending = 0, {}
    while at + BLOCK <= len(data) and data[at] != 0:
        name = data[at:at + 100].rstrip(b"\0").decode()
        size = int(data[at + 124:at + 135], 8)
        body = data[at + BLOCK:at + BLOCK + size]
        at += BLOCK + -(-size // BLOCK) * BLOCK
        key, ext = name.rsplit(".", 1)
        pending[ext] = body
        if len(pending) == 2:
            yield key, pending.pop("png"), pending.pop("txt").decode()
