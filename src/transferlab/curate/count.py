"""Stage 1, `count`, one shard at a time: read each pair once and record what every later stage needs.

For each sample, in the order the shard stores them: a hash of its key (the balancing draws are made
from it), its fate under the per-pair steps (a caption to read, the caption filter, an image to decode
when a model step is on), and for the pairs still in: their content hash (exact dedup), the metadata
entries they match, and the model embeddings or scores. Everything goes to `<out>/work/<shard>.count.npz`;
summed over shards, the matches are the entry counts of pass 1 of the balancing. Memory holds one shard's
arrays, never the pool. A shard already counted with the same options (and unchanged in size) is not
read again, so a failed job array can simply be re-run. It also records the byte ranges of each sample's
members, so the sample stage copies kept samples without parsing the shard again.

A plain tar (regular members named key.ext in single headers, as webdataset writers make them) is read
by the C extension `data._tar` where it is built (data/tar/kernels.py), in one pass over its headers; any
other tar, and every tar where the extension is not built, by `data.tar.layout` (headers parsed in place, no
torch imported).
Captions are decoded, checked and normalised for a whole shard at once, and a caption is normalised once,
for both the matcher and the content hash.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from transferlab.curate import workfiles
from transferlab.curate.balance import key_hashes, key_state
from transferlab.curate.dedup import content_hashes
from transferlab.curate.metadata import Matcher, normalise, normalise_joined
from transferlab.curate.reasons import CODE, KEPT
from transferlab.curate.settings import Settings
from transferlab.data.tar import kernels as tar_kernels
from transferlab.data.tar.layout import (
    Layout,
    Member,
    UnreadableShard,
    group_samples,
    header_blocks,
    read_layout,
    shard_bytes,
)
from transferlab.data.tar.limits import IMAGE_EXTS, MAX_CAPTION_CHARS

if TYPE_CHECKING:
    from transferlab.curate.embed import PairEmbedder


IMAGES = frozenset(IMAGE_EXTS)
IMAGE_EXT_BYTES = tuple(sorted(ext.encode() for ext in IMAGES))
FORMAT = 3  # of the count file (2: the samples' byte ranges and header digest; 3: FNV key hashes); older: recounted


@lru_cache(maxsize=1)
def matcher_for(settings: Settings) -> Matcher | None:
    """The settings' metadata matcher, built once per process."""
    return None if settings.entries is None else Matcher(settings.entries)


def read_caption(raw: bytes | None) -> tuple[str, str | None]:
    """The stripped caption of a caption member's bytes (None: no member), or "" and why there is none."""
    if raw is None:
        return "", "missing caption"
    try:
        caption = raw.decode("utf-8").strip()[:MAX_CAPTION_CHARS]
    except UnicodeDecodeError:
        return "", "invalid caption"
    return (caption, None) if caption else ("", "empty caption")


def data_at(data: bytes, where: list[int]) -> bytes:
    """The bytes at an (offset, size) pair of `Samples`; none for offset -1."""
    offset, size = where
    return b"" if offset < 0 else bytes(data[offset:offset + size])


def image_member(members: dict[str, Member]) -> Member | None:
    """The sample's first image member, None when it has none."""
    for ext, member in members.items():
        if ext.lower() in IMAGES:
            return member
    return None


@dataclass(frozen=True)
class Samples:
    """A shard's samples in stored order: their key hashes (`balance.key_hashes`), the byte ranges holding
    their members (sample i's are spans[span_ptr[i]:span_ptr[i + 1]]), and where the caption's and the first
    image's data lie (offset, size; -1 for none); `layout` holds what the tar reader skipped, and `keys()`
    gives the keys themselves (UTF-8, a numpy bytes array), which only a report example needs."""

    key_hashes: np.ndarray
    spans: np.ndarray
    span_ptr: np.ndarray
    captions: np.ndarray
    images: np.ndarray
    layout: Layout
    keys: Callable[[], np.ndarray]

    @classmethod
    def none(cls) -> Samples:
        """No sample (a shard that could not be read)."""
        pairs = np.zeros((0, 2), dtype=np.int64)
        return cls(np.zeros(0, dtype=np.uint64), pairs, np.zeros(1, dtype=np.int64), pairs, pairs, Layout(),
                   lambda: np.zeros(0, dtype="S1"))


def read_samples(data: bytes, caption_key: str, shard_name: str) -> Samples:
    """The samples of a shard's bytes: in C for a plain tar where the extension is built, else through
    `data.tar.layout` (long names, pax records, damage and the rest)."""
    table = tar_kernels.plain_samples(data, (caption_key.encode(),), IMAGE_EXT_BYTES, key_state(shard_name))
    if table is not None:
        def keys() -> np.ndarray:  # a key is the start of its sample's first name
            names = header_blocks(data, table[:, 0], 100)
            names[np.arange(100) >= table[:, 2:3]] = 0
            return names.view("S100").ravel()

        return Samples(table[:, 3].view(np.uint64), table[:, :2], np.arange(len(table) + 1), table[:, 6:8],
                       table[:, 4:6], Layout(), keys)
    layout = read_layout(data)
    names, spans, span_ptr, where = [], [], [0], []
    for key, members in group_samples(layout):
        names.append(key.encode("utf-8", "surrogateescape"))
        spans.extend(_blocks(members))
        span_ptr.append(len(spans))
        where.append(_where(members.get(caption_key)) + _where(image_member(members)))
    where = np.array(where, dtype=np.int64).reshape(-1, 4)
    names = np.array(names, dtype=bytes)
    return Samples(key_hashes(shard_name, names), np.array(spans, dtype=np.int64).reshape(-1, 2),
                   np.array(span_ptr, dtype=np.int64), where[:, :2], where[:, 2:], layout, lambda: names)


def _where(member: Member | None) -> tuple[int, int]:
    return (-1, -1) if member is None else (member.offset, member.size)


def read_captions(data: bytes, where: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`read_caption` of each sample's caption member (`Samples.captions`), as an object array of captions
    ("" for none) and the status codes (KEPT, or why there is none). The shard's captions are decoded as
    one text and split, unless one of them is not UTF-8 or holds a NUL (then one by one)."""
    captions = np.full(len(where), "", dtype=object)
    status = np.full(len(where), CODE["missing caption"], dtype=np.uint8)
    present = np.flatnonzero(where[:, 0] >= 0)
    decoded = tar_kernels.decoded_texts(data, where, MAX_CAPTION_CHARS)
    if decoded is None:
        found = [read_caption(data[start:start + size]) for start, size in where[present].tolist()]
        texts, codes = [text for text, _ in found], [KEPT if why is None else CODE[why] for _, why in found]
    else:
        texts = decoded[1]
        codes = np.where(np.fromiter(map(len, texts), dtype=np.int64, count=len(texts)) > 0, KEPT,
                         CODE["empty caption"])
    if len(present):
        captions[present], status[present] = texts, codes
    return captions, status


def fates(data: bytes, found: Samples, settings: Settings,
          embedder: PairEmbedder | None) -> tuple[np.ndarray, np.ndarray]:
    """Each sample's status after the per-pair steps (caption, caption filter, model), and the captions of
    those still in."""
    captions, status = read_captions(data, found.captions)
    passing = np.flatnonzero(status == KEPT)
    reasons = settings.filters.reasons(captions[passing].tolist())
    if any(reasons):
        status[passing] = [KEPT if why is None else CODE[why] for why in reasons]
    if embedder is not None:
        for i in np.flatnonzero(status == KEPT).tolist():
            why = embedder.add(data_at(data, found.images[i].tolist()), captions[i])
            status[i] = KEPT if why is None else CODE[why]
    return status, captions[status == KEPT]


def count_shard(shard: Path, out: Path, settings: Settings) -> Path:
    """Count one shard into its work file and return the file's path."""
    shard = Path(shard)
    file, size = workfiles.path(out, "count", shard), shard.stat().st_size
    if workfiles.is_current(file, settings.fingerprint, shard_bytes=size, format=FORMAT):
        return file
    embedder = None
    if settings.near_dup_model or settings.score_model:
        from transferlab.curate.embed import PairEmbedder  # models load only when asked: workers start faster

        embedder = PairEmbedder(settings)
    case_sensitive = settings.entries is not None and settings.entries.case_sensitive
    digest, unreadable, texts, captions = "", None, None, []
    found, status, hashes = Samples.none(), np.zeros(0, dtype=np.uint8), np.zeros(0, dtype=np.uint64)
    try:
        with shard_bytes(shard) as data:
            found = read_samples(data, settings.caption_key, shard.name)
            status, captions = fates(data, found, settings, embedder)
            captions = captions.tolist()
            texts = normalise_joined(captions, case_sensitive) if captions else None
            hashes = np.zeros(len(status), dtype=np.uint64)
            if settings.dedup and captions:  # on the caption folded to lower case, whatever the matching does
                folded = (texts if not case_sensitive and texts is not None else normalise_joined(captions))
                folded = folded.split("\0") if folded is not None else [normalise(c) for c in captions]
                kept = status == KEPT
                hashes[kept] = _content_hashes(data, found.images[kept], folded)
            digest = headers_digest(data, found.spans[found.span_ptr[:-1], 0])
    except UnreadableShard as err:  # raised before reading began: the shard holds no sample for us
        unreadable = err.reason
    match_ptr, match_ids = _matches(matcher_for(settings), captions, texts, status)
    layout = found.layout
    skipped = dict(layout.skipped) | ({"corrupt shard": 1} if layout.corrupt else {}) | \
        ({unreadable: 1} if unreadable else {})
    models = {} if embedder is None else {e.name: e.fingerprint for e in embedder.encoders}
    info = {"shard": shard.name, "shard_bytes": size, "skipped": skipped, "models": models, "headers": digest,
            "format": FORMAT}
    return workfiles.save(file, settings.fingerprint, info, key_hash=found.key_hashes,
                          content_hash=hashes, status=status, match_ptr=match_ptr, match_ids=match_ids,
                          span_ptr=found.span_ptr, spans=found.spans,
                          **(embedder.arrays() if embedder is not None else {}))


def _content_hashes(data: bytes, images: np.ndarray, folded: list[str]) -> np.ndarray:
    """The exact-dedup hashes of the pairs still in: their folded captions and their images' bytes."""
    pictures = [data_at(data, where) for where in images.tolist()] if (images[:, 0] >= 0).any() else \
        [b""] * len(folded)  # a caption-only shard: no image bytes to read
    return content_hashes(folded, pictures)


def _matches(matcher: Matcher | None, captions: list[str], texts: str | None,
             status: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The entries each pair still in matches (pair i: ids[ptr[i]:ptr[i + 1]]; none for the pairs out):
    all captions of the shard in one scan (`texts`, their normalised join), or one scan each when a caption
    holds a NUL (`texts` None)."""
    match_ptr, match_ids = np.zeros(len(status) + 1, dtype=np.int64), np.zeros(0, dtype=np.int32)
    if matcher is None or not captions:
        return match_ptr, match_ids
    if texts is None:
        found = [matcher(caption) for caption in captions]
        ptr = np.cumsum([0] + [len(ids) for ids in found])
        match_ids = np.fromiter(itertools.chain.from_iterable(found), dtype=np.int32)
    else:
        ptr, match_ids = matcher.batch(texts)
    per_row = np.zeros(len(status), dtype=np.int64)
    per_row[status == KEPT] = np.diff(ptr)
    match_ptr[1:] = np.cumsum(per_row)
    return match_ptr, match_ids


def headers_digest(data: bytes, starts: np.ndarray) -> str:
    """A digest of the name, mode, owner and size fields of every sample's first header block: the sample
    stage checks the shard against it before copying byte ranges."""
    if not len(starts):
        return ""
    starts = np.asarray(starts, dtype=np.int64)  # name, mode, owner and size: the first 136 bytes
    fields = tar_kernels.gather(data, starts, 136)
    return hashlib.sha256(fields).hexdigest()[:32]  # SHA-256: twice as fast as BLAKE2b here (SHA extensions)


def _blocks(members: dict[str, Member]) -> list[tuple[int, int]]:
    """The byte ranges that hold a sample's members in its shard (adjacent members merged): what the sample
    stage copies, so the members it left out (unsafe, repeated) are never copied."""
    if len(members) == 1:
        (member,) = members.values()
        return [(member.start, member.end)]
    ranges: list[tuple[int, int]] = []
    for member in sorted(members.values(), key=lambda m: m.start):
        if ranges and ranges[-1][1] == member.start:
            ranges[-1] = (ranges[-1][0], member.end)
        else:
            ranges.append((member.start, member.end))
    return ranges
