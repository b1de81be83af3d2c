"""The streaming index of a webdataset pool, built once per node and memory-mapped by every process that reads it.

For each kept sample, where its image lies (its shard, byte offset and length), its captions and its label, in
fixed-width columns plus one blob of caption text (`COLUMNS`: 36 bytes a sample, 44 with labels, plus the
captions' UTF-8). It lives in `$TRANSFERLAB_CACHE/index/v2/pools/<key>/`, the key a hash of the shards' paths or
URLs, their versions (size and modification time, or ETag) and what is read of them, so a changed pool gets a
new index and an old one is never misread. Every process maps the columns read-only: the pages are the page
cache's, shared by all ranks and loader workers of the node, so adding processes adds no index memory, and
pages a process never touches cost it nothing.

Building it reads every shard once (data/stream/shard_scan.py: the C tar kernel over a local plain tar, at header
speed), in parallel processes, each shard's columns cached on their own so a pool that grows by a shard reads
only that shard. The first process of the node to arrive builds it under a file lock; the others (the other
ranks of a torchrun job) wait on the lock and map what it wrote — nobody indexes twice. The columns are written
under a temporary name and renamed whole, `meta.json` inside them last.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import mmap
import multiprocessing
import os
import shutil
import sys
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from transferlab.config import WebDatasetSource
from transferlab.data.caption_column import CaptionColumn
from transferlab.data.dataset import ImageTextData
from transferlab.data.lazy import LazyImages
from transferlab.data.report import DataReport
from transferlab.data.samples import INTEGER, fill_template, no_samples
from transferlab.data.stream.shard_samples import several_lines_note
from transferlab.data.stream.shard_scan import FORMAT, ScanSpec, ShardColumns, scan_shard
from transferlab.data.tar.count_files import published_counts
from transferlab.data.tar.remote import cache_folder, is_url, stamp

COLUMNS = {  # name -> dtype; `first` has one entry more than there are samples, `ends` one per caption
    "source": np.int32, "offset": np.int64, "length": np.int64, "first": np.int64, "ends": np.int64,
    "text": np.uint8, "labels": np.int64,
}
VERSION_THREADS = 16  # a remote pool's shard versions are asked for this many at a time


class PoolIndex:
    """A built index: `meta` (shards, their versions, counts, class names, what was skipped) and the columns,
    memory-mapped copy-on-write (nothing is ever written back)."""

    def __init__(self, folder: Path, meta: dict, columns: dict[str, np.ndarray]) -> None:
        self.folder, self.meta, self.columns = folder, meta, columns

    def __len__(self) -> int:
        return self.meta["samples"]

    @classmethod
    def open(cls, folder: Path) -> PoolIndex | None:
        """The index in `folder`, or None when there is none (or it is damaged, or of another format)."""
        try:
            meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
            if meta.get("format") != FORMAT:
                return None
            columns = {name: _map(folder / f"{name}.bin", dtype) for name, dtype in COLUMNS.items()
                       if name != "labels" or meta["labelled"]}
        except (OSError, ValueError, KeyError):
            return None
        expected = {"source": meta["samples"], "first": meta["samples"] + 1, "ends": meta["captions"],
                    "text": meta["text_bytes"]}
        if any(len(columns[name]) != count for name, count in expected.items()):
            return None
        return cls(folder, meta, columns)

    def dataset(self, name: str, spec: WebDatasetSource, report: DataReport) -> ImageTextData:
        """The pool as a streamed dataset: images located (LazyImages), captions and labels read on demand."""
        meta, columns = self.meta, self.columns
        report.kept = len(self)
        report.skipped.update(meta["skipped"])
        for note in meta["notes"]:
            report.note(note)
        several_lines_note(report, name, spec.caption_key, meta["several_lines"])
        if not len(self):
            raise no_samples(name, spec.shards, report)
        labels = classnames = filled = named_by = None
        if meta["labelled"]:
            labels, classnames = torch.from_numpy(columns["labels"]), meta["classnames"]
            named_by = meta["classnames_from"] or (None if all(INTEGER.fullmatch(c) for c in classnames)
                                                   else "the label values")
            if spec.templates:
                filled = [[fill_template(t, classname, name) for t in spec.templates] for classname in classnames]
        images = LazyImages(list(meta["sources"]), list(meta["versions"]), columns["source"], columns["offset"],
                            columns["length"])
        captions = CaptionColumn(columns["text"], columns["ends"], columns["first"],
                                 None if labels is None else columns["labels"], filled,
                                 uncaptioned=meta["uncaptioned"])
        return ImageTextData(name=name, images=images, captions=captions, labels=labels, classnames=classnames,
                             classnames_from=named_by, report=report)


def pool_index(spec: WebDatasetSource, name: str, sources: list[str], known: list[str] | None = None,
               known_from: str = "") -> PoolIndex:
    """The index of the shards `sources` under `spec`: mapped from the cache, or built first (by this process,
    or by another of the node that got there first, which this one then waits for)."""
    versions = shard_versions(sources)
    scan = ScanSpec(spec, name, None if known is None else tuple(known), known_from)
    key = hashlib.sha256(json.dumps([FORMAT, scan.signature(), sources, versions]).encode()).hexdigest()
    folder = cache_folder() / "index" / f"v{FORMAT}" / "pools" / key[:40]
    index = PoolIndex.open(folder)
    if index is not None and not (index.meta["skipped"] and spec.bad_samples == "error"):
        return index
    with _exclusive(folder.with_name(folder.name + ".lock")):
        index = PoolIndex.open(folder)  # another process may have built it while this one waited
        if index is None or (index.meta["skipped"] and spec.bad_samples == "error"):
            index = _build(folder, sources, versions, scan)
    return index


def shard_versions(sources: list[str]) -> list[str]:
    """Each shard's `remote.stamp` ("" when it cannot be reached: its reading reports that), URLs asked in
    parallel."""
    def version(source: str) -> str:
        try:
            return stamp(source)
        except (OSError, ValueError):
            return ""
    if not any(is_url(source) for source in sources):
        return [version(source) for source in sources]
    with ThreadPoolExecutor(VERSION_THREADS) as pool:
        return list(pool.map(version, sources))


@contextlib.contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created if missing) for the block: one builder per node at a time."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _map(path: Path, dtype) -> np.ndarray:
    """The column file mapped copy-on-write, for random access: the kernel maps the pages read, not the 64 KB
    around each that it would for a sequential reader (which would put most of a large column in every process)."""
    if path.stat().st_size == 0:
        return np.zeros(0, dtype=dtype)
    column = np.memmap(path, dtype=dtype, mode="c")
    if hasattr(mmap, "MADV_RANDOM"):
        column._mmap.madvise(mmap.MADV_RANDOM)
    return column


def _build(folder: Path, sources: list[str], versions: list[str], scan: ScanSpec) -> PoolIndex:
    partial = folder.with_name(f".{folder.name}.{os.getpid()}.part")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    published = published_counts(sources)
    writer = _ColumnWriter(partial, scan)
    bar = tqdm(total=len(sources), desc=f"indexing {scan.name}", unit=" shards", delay=1, leave=False,
               dynamic_ncols=True)
    try:
        for number, (source, columns) in enumerate(zip(sources, _scan_all(sources, versions, scan), strict=True)):
            writer.add(number, columns)
            if source in published and published[source] != len(columns) + sum(columns.skipped.values()):
                writer.notes.append(f"{source}: a count file beside the pool gives {published[source]} samples, "
                                    f"the shard holds {len(columns) + sum(columns.skipped.values())}; the shard's "
                                    f"own count is used")
            bar.update(1)
            bar.set_postfix(samples=f"{writer.samples:,}", refresh=False)
    finally:
        bar.close()
    meta = writer.finish(sources, versions)
    (partial / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(partial, folder)
    index = PoolIndex.open(folder)
    assert index is not None, f"the index just written to {folder} does not read back"
    return index


def _scan_all(sources: list[str], versions: list[str], scan: ScanSpec) -> Iterator[ShardColumns]:
    """Each shard's columns, in order; read by a process per CPU core (forked on Linux, where reading needs
    none of this process's state) when there are several shards."""
    workers = min(len(sources), os.cpu_count() or 1)
    if workers < 2 or multiprocessing.current_process().daemon:  # a daemonic process may not start others
        yield from (scan_shard(source, version, scan) for source, version in zip(sources, versions, strict=True))
        return
    context = get_context("fork" if sys.platform.startswith("linux") else "spawn")
    with context.Pool(workers) as pool:
        yield from pool.imap(_scan_job, [(source, version, scan) for source, version in zip(sources, versions,
                                                                                           strict=True)])


def _scan_job(job: tuple[str, str, ScanSpec]) -> ShardColumns:
    return scan_shard(*job)


class _ColumnWriter:
    """Appends each shard's columns to the pool's column files; at the end, numbers the labels as the classes
    they name (the known class names, else the label texts in order: numeric when all are integers)."""

    def __init__(self, folder: Path, scan: ScanSpec) -> None:
        self.folder, self.scan = folder, scan
        self.files = {name: open(folder / f"{name}.bin", "wb") for name in COLUMNS}
        np.zeros(1, dtype=np.int64).tofile(self.files["first"])
        self.samples = self.captions = self.text_bytes = self.several_lines = self.uncaptioned = 0
        self.skipped: Counter = Counter()
        self.vocab: dict[str, int] = {}
        self.notes: list[str] = []

    def add(self, number: int, columns: ShardColumns) -> None:
        files = self.files
        np.full(len(columns), number, dtype=np.int32).tofile(files["source"])
        columns.offset.astype(np.int64).tofile(files["offset"])
        columns.length.astype(np.int64).tofile(files["length"])
        (self.captions + np.cumsum(columns.counts, dtype=np.int64)).tofile(files["first"])
        (self.text_bytes + np.cumsum(columns.caption_bytes, dtype=np.int64)).tofile(files["ends"])
        files["text"].write(columns.text)
        if columns.labels is not None:
            codes = columns.labels.astype(np.int64)
            if self.scan.known is None:  # the shard's own vocabulary, renumbered into the pool's
                shift = np.array([self.vocab.setdefault(text, len(self.vocab)) for text in columns.vocab],
                                 dtype=np.int64)
                codes = shift[codes] if len(codes) else codes
            codes.tofile(files["labels"])
        self.samples += len(columns)
        self.captions += int(columns.counts.sum())
        self.text_bytes += len(columns.text)
        self.skipped.update(columns.skipped)
        self.several_lines += columns.several_lines
        self.uncaptioned += int((columns.counts == 0).sum())

    def finish(self, sources: list[str], versions: list[str]) -> dict:
        for file in self.files.values():
            file.close()
        classnames = list(self.scan.known) if self.scan.known is not None else None
        if self.scan.labelled and classnames is None:
            classnames = self._number_labels()
        return {"format": FORMAT, "samples": self.samples, "captions": self.captions, "text_bytes": self.text_bytes,
                "sources": sources, "versions": versions, "labelled": self.scan.labelled, "classnames": classnames,
                "classnames_from": self.scan.known_from if self.scan.known is not None else None,
                "skipped": dict(self.skipped), "several_lines": self.several_lines, "uncaptioned": self.uncaptioned,
                "notes": self.notes}

    def _number_labels(self) -> list[str]:
        """Class names from the label texts (integers in numeric order, else sorted), the column renumbered."""
        texts = list(self.vocab)
        numeric = all(INTEGER.fullmatch(text) for text in texts)
        canonical = [str(int(text)) if numeric else text for text in texts]
        classnames = sorted(set(canonical), key=int if numeric else None)
        place = {classname: i for i, classname in enumerate(classnames)}
        renumber = np.array([place[c] for c in canonical], dtype=np.int64)
        path = self.folder / "labels.bin"
        if path.stat().st_size:
            labels = np.memmap(path, dtype=np.int64, mode="r+")
            for start in range(0, len(labels), 2**22):
                labels[start:start + 2**22] = renumber[labels[start:start + 2**22]]
            labels.flush()
            del labels
        return classnames
