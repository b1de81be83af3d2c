"""The per-shard index cache: what a streaming index pass found in a shard, kept so it is read only once.

Indexing a streamed pool reads every shard through (its text members, and where each image lies). A run
that starts again — a resume after preemption, the next experiment on the same pool — finds each shard's
result in `$TRANSFERLAB_CACHE/index/` (default ~/.cache/transferlab), keyed by the shard's path or URL, its
version (size and modification time, or ETag) and what was asked of it, so a shard that changed is read
again. Only shards read without any problem are cached (a skipped member must be counted, or refused, anew).
The files are JSON: text members as Latin-1 strings (a lossless mapping of their bytes), image members as
[offset, size]; nothing is unpickled.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path

from transferlab.data.remote import cache_folder, stamp
from transferlab.data.samples import BadSamples
from transferlab.fileio import atomic_write

VERSION = 1


def cached_samples(shard: Path | str, signature: str, bad: BadSamples,
                   scan: Callable[[], Iterator[dict]]) -> Iterator[dict]:
    """The samples `scan()` yields for `shard`, from the cache when it holds them for this version of the shard
    and this `signature` (what the scan reads), else scanned and, when nothing was skipped, cached."""
    from transferlab.data.shards import ByteRange

    try:
        version = stamp(shard)
    except (OSError, ValueError):
        yield from scan()  # unreachable: the scan reports it
        return
    key = hashlib.sha256(f"{VERSION}\n{shard}\n{version}\n{signature}".encode()).hexdigest()
    path = cache_folder() / "index" / f"{key}.json"
    if path.is_file():
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            stored = None  # a damaged cache file is read again from the shard
        if stored is not None:
            for sample in stored:
                yield {ext: value if ext.startswith("__") else ByteRange(*value) if isinstance(value, list)
                       else value.encode("latin-1") for ext, value in sample.items()}
            return
    skipped_before = bad.report.skipped.total()
    samples = []
    for sample in scan():
        samples.append(sample)
        yield sample
    if bad.report.skipped.total() == skipped_before:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, json.dumps([{ext: value if ext.startswith("__") else list(value)
                                        if isinstance(value, ByteRange) else value.decode("latin-1")
                                        for ext, value in sample.items()} for sample in samples]))

