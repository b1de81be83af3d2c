"""Stage 1, `count`, one shard at a time: read each pair once and record what every later stage needs.

For each sample, in the order the shard stores them: a hash of its key (the balancing draws are made
from it), its fate under the per-pair steps (a caption to read, the caption filter, an image to decode
when a model step is on), and for the pairs still in: their content hash (exact dedup), the metadata
entries they match, and the model embeddings or scores. Everything goes to `<out>/work/<shard>.count.npz`;
summed over shards, the matches are the entry counts of pass 1 of the balancing. Memory holds one shard's
arrays, never the pool. A shard already counted with the same options (and unchanged in size) is not
read again, so a failed job array can simply be re-run. It also records the byte ranges of each sample's
members, so the sample stage copies kept samples without parsing the shard again.

The shard is read with `data.tar_layout` (its headers parsed in place, no torch imported), and a caption
is normalised once, for both the matcher and the content hash.
"""

from __future__ import annotations

import hashlib
import itertools
from functools import lru_cache
from pathlib import Path

import numpy as np

from transferlab.curate import workfiles
from transferlab.curate.balance import key_hashes
from transferlab.curate.dedup import content_hash
from transferlab.curate.metadata import Matcher, normalise, normalise_joined
from transferlab.curate.reasons import CODE, KEPT
from transferlab.curate.settings import Settings
from transferlab.data.limits import IMAGE_EXTS, MAX_CAPTION_CHARS
from transferlab.data.tar_layout import (
    Layout,
    Member,
    UnreadableShard,
    group_samples,
    header_blocks,
    read_layout,
    shard_bytes,
)

IMAGES = frozenset(IMAGE_EXTS)
FORMAT = 2  # of the count file: 2 added the samples' byte ranges and header digest; older files are counted again


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


def member_bytes(data: bytes, member: Member | None) -> bytes | None:
    return None if member is None else bytes(data[member.offset:member.offset + member.size])


def image_member(members: dict[str, Member]) -> Member | None:
    """The sample's first image member, None when it has none."""
    for ext, member in members.items():
        if ext.lower() in IMAGES:
            return member
    return None


def count_shard(shard: Path, out: Path, settings: Settings) -> Path:
    """Count one shard into its work file and return the file's path."""
    shard = Path(shard)
    file, size = workfiles.path(out, "count", shard), shard.stat().st_size
    if workfiles.is_current(file, settings.fingerprint, shard_bytes=size, format=FORMAT):
        return file
    matcher, embedder = matcher_for(settings), None
    if settings.near_dup_model or settings.score_model:
        from transferlab.curate.embed import PairEmbedder  # models load only when asked: workers start faster

        embedder = PairEmbedder(settings)
    keys, status, spans, span_ptr, captions, images, passed = [], [], [], [0], [], [], []
    case_sensitive = settings.entries is not None and settings.entries.case_sensitive
    digest, unreadable, texts, hashes = "", None, None, np.zeros(0, dtype=np.uint64)
    try:
        with shard_bytes(shard) as data:
            layout = read_layout(data)
            for key, members in group_samples(layout):
                keys.append(key)
                spans.extend(_blocks(members))
                span_ptr.append(len(spans))
                caption, reason = read_caption(member_bytes(data, members.get(settings.caption_key)))
                reason = reason or settings.filters.reason(caption)
                image = image_member(members) if settings.dedup or embedder is not None else None
                if reason is None and embedder is not None:
                    reason = embedder.add(member_bytes(data, image) or b"", caption)
                if reason is None:
                    passed.append(len(status))
                    captions.append(caption)
                    images.append(image)
                status.append(KEPT if reason is None else CODE[reason])
            texts = normalise_joined(captions, case_sensitive) if captions else None
            hashes = np.zeros(len(status), dtype=np.uint64)
            if settings.dedup and captions:  # on the caption folded to lower case, whatever the matching does
                folded = (texts if not case_sensitive and texts is not None else normalise_joined(captions))
                folded = folded.split("\0") if folded is not None else [normalise(c) for c in captions]
                hashes[passed] = [content_hash(text, member_bytes(data, image) or b"")
                                  for text, image in zip(folded, images, strict=True)]
            digest = headers_digest(data, np.array([spans[p][0] for p in span_ptr[:-1]], dtype=np.int64))
    except UnreadableShard as err:  # raised before reading began: the shard holds no sample for us
        layout, unreadable = Layout(), err.reason
    keys = key_hashes(shard.name, keys)
    match_ptr, match_ids = np.zeros(len(status) + 1, dtype=np.int64), np.zeros(0, dtype=np.int32)
    if matcher is not None and captions:  # all captions of the shard in one scan of the automaton
        if texts is None:  # a caption holds a NUL: one scan each
            found = [matcher(caption) for caption in captions]
            ptr = np.cumsum([0] + [len(f) for f in found])
            match_ids = np.fromiter(itertools.chain.from_iterable(found), dtype=np.int32)
        else:
            ptr, match_ids = matcher.batch(texts)
        per_row = np.zeros(len(status), dtype=np.int64)
        per_row[passed] = np.diff(ptr)
        match_ptr[1:] = np.cumsum(per_row)
    skipped = dict(layout.skipped) | ({"corrupt shard": 1} if layout.corrupt else {}) | \
        ({unreadable: 1} if unreadable else {})
    models = {} if embedder is None else {e.name: e.fingerprint for e in embedder.encoders}
    info = {"shard": shard.name, "shard_bytes": size, "skipped": skipped, "models": models, "headers": digest,
            "format": FORMAT}
    return workfiles.save(file, settings.fingerprint, info, key_hash=keys,
                          content_hash=hashes, status=np.array(status, dtype=np.uint8),
                          match_ptr=match_ptr, match_ids=match_ids,
                          span_ptr=np.array(span_ptr, dtype=np.int64),
                          spans=np.array(spans, dtype=np.int64).reshape(-1, 2),
                          **(embedder.arrays() if embedder is not None else {}))


def headers_digest(data: bytes, starts: np.ndarray) -> str:
    """A digest of the name, mode, owner and size fields of every sample's first header block: the sample
    stage checks the shard against it before copying byte ranges."""
    if not len(starts):
        return ""
    blocks = header_blocks(data, starts, 136)  # name, mode, owner, size
    return hashlib.blake2b(blocks.tobytes(), digest_size=16).hexdigest()


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
