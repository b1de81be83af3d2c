"""Stage 3, `sample`, one shard at a time: the balancing draws, then the curated shard.

With the pool's entry counts from the plan, each pair still in is kept or dropped by the MetaCLIP rule
(`balance.balanced_keep`); a pair matching no entry is dropped. The kept samples are then copied into
`<out>/<shard name>.tar` as the very byte ranges that hold their members in the pool (headers, data,
padding: every member byte for byte, its tar metadata too), which the count stage recorded, so the shard
is not parsed again; the same input and options give the same bytes. The shard's fates, what the tar
reader skipped, the first few removed pairs per reason (caption, matched entries, a thumbnail) and how many
kept pairs match each entry go to `work/<shard>.sample.npz` for the report.

The count stage's digest of the samples' headers is checked first, so a shard edited between the stages
(samples added, removed, renamed or reordered) is an error, not a silent misalignment.

A curated shard is renamed into place whole (a job killed at any point leaves none or all of it), after
its record; it is not fsynced (the work files are): the OS writes the bulk data back while the next shard
is read, as webdataset's writers let it. The record holds the shard's size, and a rerun writes again a
shard whose size differs from it, as one cut short by a power cut would.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import re
from functools import lru_cache
from pathlib import Path

import numpy as np

from transferlab.curate import workfiles
from transferlab.curate.balance import balanced_keep
from transferlab.curate.count import FORMAT as COUNT_FORMAT
from transferlab.curate.count import data_at, headers_digest, read_caption, read_samples
from transferlab.curate.plan import check_unchanged
from transferlab.curate.reasons import CODE, KEPT, reason_of
from transferlab.curate.settings import Settings
from transferlab.data.tar.layout import BLOCK, shard_bytes
from transferlab.errors import UserError
from transferlab.fileio import atomic_open

THUMBNAIL = 96  # pixels per side of an example's image in the report
EXAMPLE_CHARS = 300
EXAMPLE_ENTRIES = 8
COMPRESSED = re.compile(r"(\.tar)?\.(gz|tgz|bz2|xz)$|\.tar$")
RECORD = 20 * BLOCK  # a tar file's length is a multiple of this (tarfile and GNU tar pad to it)
WRITE = 1 << 18  # bytes per write of a curated shard (measured: 256 KiB writes 1.4-2x faster than 3 MiB ones)


def output_name(shard: Path) -> str:
    """The curated shard's file name: the input's, as an uncompressed .tar."""
    return COMPRESSED.sub("", Path(shard).name) + ".tar"


def final_status(settings: Settings, planned: np.ndarray, counted: dict[str, np.ndarray],
                 counts: np.ndarray) -> np.ndarray:
    """Each pair's fate after balancing (0: kept), from its fate after the plan."""
    status = planned.copy()
    if settings.entries is None:
        return status
    candidate, matched = status == KEPT, np.diff(counted["match_ptr"]) > 0
    keep = balanced_keep(counted["match_ptr"], counted["match_ids"], counted["key_hash"], counts, settings.cap,
                         settings.seed)
    status[candidate & ~matched] = CODE["no metadata match"]
    status[candidate & matched & ~keep] = CODE["not sampled"]
    return status


def sample_shard(shard: Path, out: Path, settings: Settings) -> Path:
    """Balance one shard, write its curated copy and its work file; return the work file's path."""
    shard, fingerprint = Path(shard), settings.fingerprint
    file, target = workfiles.path(out, "sample", shard), Path(out) / output_name(shard)
    if target.exists() and not file.exists():
        raise UserError(f"{target} already exists and was not written by this curation; transferlab never "
                        f"overwrites data. Choose another --out, or move the file away.")
    counts, plan_info = _pool_plan(workfiles.path(out, "plan"), fingerprint)
    if target.exists() and workfiles.is_current(file, fingerprint, shard_bytes=shard.stat().st_size,
                                                plan=plan_info["id"], output_bytes=target.stat().st_size):
        return file  # (a curated shard cut short by a power cut has another size: it is written again)
    counted, info = workfiles.load(workfiles.path(out, "count", shard), fingerprint, "count",
                                   ("key_hash", "match_ptr", "match_ids", "span_ptr", "spans"))
    check_unchanged(shard, info)
    if info.get("format") != COUNT_FORMAT:
        raise UserError(f"{shard} was counted by an older transferlab, whose count files lack what the sample stage "
                        f"now reads. Run --stage count on it again (it recounts), then plan and sample.")
    planned, _ = workfiles.load(workfiles.path(out, "plan", shard), fingerprint, "plan")
    status = final_status(settings, planned["status"], counted, counts["counts"])
    examples: dict[str, list[dict]] = {}
    spans, span_ptr = counted["spans"], counted["span_ptr"]
    # a shard counted with no sample (unreadable then) is not read again: its curated copy is an empty tar
    with shard_bytes(shard) if len(status) else contextlib.nullcontext(b"") as data:
        if headers_digest(data, spans[span_ptr[:-1], 0]) != info["headers"]:
            raise UserError(f"{shard} no longer holds the samples it held when counted. Delete its work files and "
                            f"run --stage count on it again.")
        for code in np.unique(status[status != KEPT]).tolist():  # the first few removed pairs of each reason
            ids = counted["match_ids"]
            examples[reason_of(code)] = [
                _example(data, spans[span_ptr[row]:span_ptr[row + 1]], shard, settings,
                         ids[counted["match_ptr"][row]:counted["match_ptr"][row + 1]])
                for row in np.flatnonzero(status == code)[:settings.examples].tolist()]
        record = {"shard": shard.name, "shard_bytes": info["shard_bytes"], "plan": plan_info["id"],
                  "output": target.name, "skipped": info["skipped"], "examples": examples}
        kept = status == KEPT
        starts, ends = kept_ranges(spans, span_ptr, kept)
        written = int((ends - starts).sum())
        trailer = bytes(2 * BLOCK + (-(written + 2 * BLOCK)) % RECORD)  # end of archive, record padding
        record["output_bytes"] = written + len(trailer)
        with atomic_open(target, durable=False) as handle:  # bulk data: the OS writes it back, no fsync per shard
            # runs of ranges of about WRITE bytes: each joined run is still in the CPU's cache when copied out
            cuts = np.searchsorted(np.cumsum(ends - starts), np.arange(WRITE, written, WRITE), side="right")
            bounds = [0, *np.unique(cuts).tolist(), len(starts)]
            starts, ends = starts.tolist(), ends.tolist()
            for first, last in itertools.pairwise(bounds):
                handle.write(b"".join([data[a:b] for a, b in zip(starts[first:last], ends[first:last], strict=True)]))
            handle.write(trailer)
            matched = np.repeat(kept, np.diff(counted["match_ptr"]))  # the entries kept pairs match, counted
            entry_ids, entry_counts = np.unique(counted["match_ids"][matched], return_counts=True)
            workfiles.save(file, fingerprint, record, status=status, entry_ids=entry_ids.astype(np.int32),
                           entry_counts=entry_counts)  # before the shard: a shard implies its record
    return file


def _pool_plan(file: Path, fingerprint: str) -> tuple[dict[str, np.ndarray], dict]:
    """plan.npz's entry counts and info, read once per process while the file stays the same (a worker
    samples many shards with one plan)."""
    stat = file.stat() if file.is_file() else None
    return _read_pool_plan(file, fingerprint, stat and (stat.st_mtime_ns, stat.st_size, stat.st_ino))


@lru_cache(maxsize=1)
def _read_pool_plan(file: Path, fingerprint: str, _version: tuple | None) -> tuple[dict[str, np.ndarray], dict]:
    return workfiles.load(file, fingerprint, "plan", ("counts",))


def kept_ranges(spans: np.ndarray, span_ptr: np.ndarray, kept: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The byte ranges of the kept samples' members, in order, adjacent ones merged: runs of kept samples are
    copied as one slice each."""
    rows = np.flatnonzero(kept)
    counts = np.diff(span_ptr)[rows]
    if not counts.sum():
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    ranges = spans[np.repeat(span_ptr[:-1][rows], counts) + offsets]
    breaks = np.flatnonzero(ranges[1:, 0] != ranges[:-1, 1]) + 1
    return ranges[np.r_[0, breaks], 0], ranges[np.r_[breaks - 1, len(ranges) - 1], 1]


def _example(data: bytes, spans: np.ndarray, shard: Path, settings: Settings, entry_ids: np.ndarray) -> dict:
    """A removed pair as the report shows it, read from its members' byte ranges."""
    piece = b"".join(bytes(data[start:end]) for start, end in spans.tolist()) + bytes(2 * BLOCK)  # a tar of it
    found = read_samples(piece, settings.caption_key, shard.name)
    key, caption, problem, image, thumbnail = "?", "", "missing caption", None, None
    if len(found.key_hashes):
        key = found.keys()[0].decode("utf-8", "surrogateescape")
        caption_at, caption_size = found.captions[0].tolist()
        caption, problem = read_caption(piece[caption_at:caption_at + caption_size] if caption_at >= 0 else None)
        image = data_at(piece, found.images[0].tolist())
    if image:
        from transferlab.data.images import BadImage, decode_image, encode_png  # torch: only for thumbnails

        try:
            thumbnail = base64.b64encode(encode_png(decode_image(image, THUMBNAIL, 3))).decode("ascii")
        except BadImage:
            pass  # the report shows the caption alone
    names = [] if settings.entries is None else [settings.entries.entries[i] for i in entry_ids[:EXAMPLE_ENTRIES]]
    return {"shard": shard.name, "key": key, "caption": caption[:EXAMPLE_CHARS] if problem is None else f"({problem})",
            "entries": names, "image": thumbnail}
