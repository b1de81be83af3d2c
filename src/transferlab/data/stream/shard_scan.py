"""One shard of a streamed pool, indexed: where each kept sample's image lies, its captions and its label, as
columns (`ShardColumns`), cached per shard so that a shard is read once whatever becomes of the pool around it.

Two readers give the same columns (tests/data/test_pool_index.py compares them on many shapes of shard):

- A plain tar (regular members named key.ext in single headers, as webdataset writers make them) whose samples
  all read cleanly — each has an image of at most MAX_MEMBER_BYTES; a caption (or, with labels, a label) of
  UTF-8 without a NUL; no line break inside a caption that `caption_lines` would split; no .json member with
  "captions" — is read by the C tar kernel in one pass over its headers (data/tar/_tar.c), and its captions and
  labels decoded for the whole shard at once: no Python object per sample but the strings themselves.
- Anything else — an unusual or damaged tar, a sample to count as bad or to refuse, a remote shard, a
  machine without the C kernels — is read sample by sample by `shard_samples` (iter_samples and parse_sample),
  the reader every webdataset source shares, which knows every oddity.

The cache (`$TRANSFERLAB_CACHE/index/v2/shards/`) is keyed by the shard's path or URL, its version (size and
modification time, or ETag) and what the scan reads; a shard whose reading met an unreachable file is read
again next time. Nothing here decodes an image.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from transferlab.config import WebDatasetSource
from transferlab.data.report import BadSamples, DataReport
from transferlab.data.samples import INTEGER
from transferlab.data.stream.shard_samples import (
    MAX_MEMBER_BYTES,
    MAX_TEXT_BYTES,
    ByteRange,
    iter_samples,
    parse_sample,
    refuse_compressed,
)
from transferlab.data.tar import kernels as tar_kernels
from transferlab.data.tar.layout import UnreadableShard, shard_bytes
from transferlab.data.tar.limits import IMAGE_EXTS, MAX_CAPTION_CHARS
from transferlab.data.tar.remote import cache_folder, is_url

FORMAT = 2  # of the cached columns; another format is a cache miss, never misread
IMAGE_EXT_BYTES = tuple(sorted(ext.encode() for ext in IMAGE_EXTS))
LINE_BREAKS = re.compile("[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]")  # where str.splitlines splits
RETRIED = ("unreachable shard",)  # a shard whose reading met these is not cached: the next run tries again


@dataclass(frozen=True)
class ScanSpec:
    """What a shard is read for: the dataset's source settings, its key (for messages) and, when the pool has a
    classnames.txt, the class names labels index into (`known`, read from `known_from`)."""

    source: WebDatasetSource
    name: str
    known: tuple[str, ...] | None = None
    known_from: str = ""

    @property
    def labelled(self) -> bool:
        return self.source.label_key is not None

    def signature(self) -> str:
        """Everything the columns depend on besides the shard's bytes: part of the cache key."""
        src = self.source
        known = None if self.known is None else hashlib.sha256("\n".join(self.known).encode()).hexdigest()
        return json.dumps([FORMAT, src.caption_key, src.label_key, src.caption_lines, known, IMAGE_EXTS,
                           MAX_CAPTION_CHARS, MAX_MEMBER_BYTES])


@dataclass
class ShardColumns:
    """A shard's kept samples in stored order: their image member's data (offset, length), how many captions
    each has (0: label-only), each caption's UTF-8 bytes and the text itself, and labels as indices into
    `vocab` (the raw label texts; into the class names when the pool has them); with what was skipped by
    reason and how many caption members were split into lines."""

    offset: np.ndarray
    length: np.ndarray
    counts: np.ndarray
    caption_bytes: np.ndarray
    text: bytes
    labels: np.ndarray | None = None
    vocab: list[str] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)
    several_lines: int = 0

    def __len__(self) -> int:
        return len(self.offset)

    def save(self, path: Path) -> None:
        """Write to `path` (an .npz, under a temporary name then renamed: whole or absent)."""
        info = {"vocab": self.vocab, "skipped": self.skipped, "several_lines": self.several_lines,
                "labelled": self.labels is not None}
        arrays = {"offset": self.offset, "length": self.length, "counts": self.counts,
                  "caption_bytes": self.caption_bytes, "text": np.frombuffer(self.text, dtype=np.uint8),
                  "labels": self.labels if self.labels is not None else np.zeros(0, dtype=np.int32),
                  "info": np.frombuffer(json.dumps(info).encode(), dtype=np.uint8)}
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}.part")
        with open(partial, "wb") as file:
            np.savez(file, **arrays)
        os.replace(partial, path)

    @classmethod
    def load(cls, path: Path) -> ShardColumns:
        with np.load(path, allow_pickle=False) as stored:
            info = json.loads(stored["info"].tobytes())
            return cls(stored["offset"], stored["length"], stored["counts"], stored["caption_bytes"],
                       stored["text"].tobytes(), stored["labels"] if info["labelled"] else None, info["vocab"],
                       info["skipped"], info["several_lines"])


def scan_shard(shard: str, version: str, spec: ScanSpec) -> ShardColumns:
    """The columns of `shard` at `version` (its `remote.stamp`), from the cache or read and cached. A shard with
    bad samples, under `bad_samples: error`, is read again, so the error names the sample."""
    key = hashlib.sha256(f"{shard}\n{version}\n{spec.signature()}".encode()).hexdigest()
    path = cache_folder() / "index" / f"v{FORMAT}" / "shards" / f"{key[:40]}.npz"
    if path.is_file():
        try:
            columns = ShardColumns.load(path)
        except (OSError, ValueError, KeyError):
            columns = None  # a damaged cache file: read the shard again
        if columns is not None and not (columns.skipped and spec.source.bad_samples == "error"):
            return columns
    columns = _read(shard, spec)
    if not any(reason in columns.skipped for reason in RETRIED):
        columns.save(path)
    return columns


def _read(shard: str, spec: ScanSpec) -> ShardColumns:
    try:
        refuse_compressed(shard)  # a compressed shard has no byte ranges to stream images from
    except OSError:
        return _careful_columns(shard, spec)  # unreachable: the careful reader counts it, or refuses it
    if not is_url(shard):
        try:
            with shard_bytes(Path(shard)) as data:
                columns = _plain_columns(data, spec)
                if columns is not None:
                    return columns
        except UnreadableShard:
            pass
    return _careful_columns(shard, spec)


def _plain_columns(data, spec: ScanSpec) -> ShardColumns | None:
    """The columns of a plain tar whose samples all read cleanly, or None (then the careful reader decides)."""
    src = spec.source
    exts = [src.caption_key, *([src.label_key] if src.label_key else []), "json"]
    if len(set(exts)) < len(exts) or any(ext.lower() in IMAGE_EXTS for ext in exts):
        return None
    table = tar_kernels.plain_samples(data, tuple(ext.encode() for ext in exts), IMAGE_EXT_BYTES)
    if table is None:
        return None
    images, captions, json_members = table[:, 4:6], table[:, 6:8], table[:, -2:]
    if (images[:, 0] < 0).any() or (images[:, 1] > MAX_MEMBER_BYTES).any() or \
            not _json_without_captions(data, json_members):
        return None
    found = _plain_captions(data, captions, src.caption_lines, spec.labelled)
    if found is None:
        return None
    counts, caption_bytes, text = found
    labels, vocab = None, []
    if spec.labelled:
        read = _plain_labels(data, table[:, 8:10], spec.known)
        if read is None:
            return None
        labels, vocab = read
    return ShardColumns(images[:, 0].copy(), images[:, 1].copy(), counts, caption_bytes, text, labels, vocab)


def _json_without_captions(data, where: np.ndarray) -> bool:
    """Whether every .json member present is valid JSON without "captions" (which would replace the caption)."""
    for offset, size in where[where[:, 0] >= 0].tolist():
        if size > MAX_MEMBER_BYTES:
            return False
        try:
            meta = json.loads(bytes(data[offset:offset + size]))
        except (ValueError, RecursionError):
            return False
        if isinstance(meta, dict) and "captions" in meta:
            return False
    return True


def _plain_captions(data, where: np.ndarray, by_line: bool | str,
                    labelled: bool) -> tuple[np.ndarray, np.ndarray, bytes] | None:
    """Per sample its caption count (0 or 1), each caption's UTF-8 size, and the text — stripped and cut as
    `shard_samples.parse_sample` would — or None when a sample needs the careful reader."""
    present = where[:, 0] >= 0
    if (not labelled and not present.all()) or (where[present, 1] > MAX_TEXT_BYTES).any():
        return None
    found = tar_kernels.decoded_texts(data, where, MAX_CAPTION_CHARS)
    if found is None:
        return None
    text, pieces = found
    if by_line is not False and LINE_BREAKS.search(text):
        return None
    nonempty = np.fromiter(map(bool, pieces), dtype=bool, count=len(pieces))
    if not labelled and not nonempty.all():
        return None
    counts = np.zeros(len(where), dtype=np.int32)
    counts[np.flatnonzero(present)[nonempty]] = 1
    encoded = [piece.encode("utf-8") for piece in pieces if piece]
    return counts, np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded)), b"".join(encoded)


def _plain_labels(data, where: np.ndarray, known: tuple[str, ...] | None) -> tuple[np.ndarray, list[str]] | None:
    """Each sample's label as an index into a vocabulary of the raw texts (or into `known` class names), or
    None when one is missing, not UTF-8, empty or unknown (the careful reader counts or refuses it)."""
    if (where[:, 0] < 0).any() or (where[:, 1] > MAX_TEXT_BYTES).any():
        return None
    found = tar_kernels.decoded_texts(data, where, MAX_TEXT_BYTES)
    if found is None:
        return None
    texts = found[1]
    vocab: dict[str, int] = {}
    codes = np.fromiter((vocab.setdefault(text, len(vocab)) for text in texts), dtype=np.int32, count=len(texts))
    if "" in vocab:
        return None
    if known is None:
        return codes, list(vocab)
    classes = [known_index(text, known) for text in vocab]
    if min(classes, default=0) < 0:
        return None
    return np.asarray(classes, dtype=np.int32)[codes], list(known)


def known_index(label: str, known: tuple[str, ...]) -> int:
    """The class a raw label names among `known` class names: an integer index in range, else a name; -1 if
    neither (as `samples.assemble` indexes labels)."""
    if INTEGER.fullmatch(label):
        number = int(label)
        return number if 0 <= number < len(known) else -1
    try:
        return known.index(label)
    except ValueError:
        return -1


def _careful_columns(shard: str, spec: ScanSpec) -> ShardColumns:
    """The columns of any shard, sample by sample through `parse_sample` (bad samples counted or refused)."""
    src = spec.source
    bad = BadSamples(spec.name, src.bad_samples, DataReport(), "sample")
    text = {key for key in (src.caption_key, src.label_key) if key}
    wanted = {*text, "json"}
    lines: Counter = Counter()
    offsets, lengths, counts, captions, labels = [], [], [], [], []
    vocab: dict[str, int] = {}
    for sample in iter_samples([shard], bad, lambda ext: ext in wanted or ext.lower() in IMAGE_EXTS, text, IMAGE_EXTS):
        parsed = parse_sample(sample, src, spec.name, spec.labelled, bad, lambda member, _: member, lines)
        if parsed is None:
            continue
        if spec.known is not None:
            number = known_index(parsed.label, spec.known)
            if number < 0:
                bad("unknown label", parsed.where, f"the label '{parsed.label}' is neither a class index "
                                                   f"0..{len(spec.known) - 1} nor a class name in {spec.known_from}")
                continue
            labels.append(number)
        elif spec.labelled:
            labels.append(vocab.setdefault(parsed.label, len(vocab)))
        image: ByteRange = parsed.image
        offsets.append(image.offset)
        lengths.append(image.size)
        counts.append(len(parsed.captions))
        captions.extend(caption.encode("utf-8") for caption in parsed.captions)
    return ShardColumns(np.array(offsets, dtype=np.int64), np.array(lengths, dtype=np.int64),
                        np.array(counts, dtype=np.int32), np.fromiter(map(len, captions), dtype=np.int64,
                                                                      count=len(captions)),
                        b"".join(captions), np.array(labels, dtype=np.int32) if spec.labelled else None,
                        list(spec.known) if spec.known is not None else list(vocab), dict(bad.report.skipped),
                        lines["several"])
