"""Stage 1, `count`, one shard at a time: read each pair once and record what every later stage needs.

For each sample, in the order the shard stores them: a hash of its key (the balancing draws are made
from it), its fate under the per-pair steps (a caption to read, the caption filter, an image to decode
when a model step is on), and for the pairs still in: their content hash (exact dedup), the metadata
entries they match, and the model embeddings or scores. Everything goes to `<out>/work/<shard>.count.npz`;
summed over shards, the matches are the entry counts of pass 1 of the balancing. Memory holds one shard's
arrays, never the pool. A shard already counted with the same options (and unchanged in size) is not
read again, so a failed job array can simply be re-run.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from transferlab.curate import workfiles
from transferlab.curate.balance import key_hash
from transferlab.curate.dedup import content_hash
from transferlab.curate.metadata import Matcher
from transferlab.curate.reasons import CODE, KEPT
from transferlab.curate.settings import Settings
from transferlab.data.dataset import DataReport
from transferlab.data.samples import MAX_CAPTION_CHARS, BadSamples
from transferlab.data.shards import IMAGE_EXTS, iter_samples


@lru_cache(maxsize=1)
def matcher_for(settings: Settings) -> Matcher | None:
    """The settings' metadata matcher, built once per process."""
    return None if settings.entries is None else Matcher(settings.entries)


def read_caption(sample: dict, key: str) -> tuple[str, str | None]:
    """The sample's stripped caption, or "" and why there is none."""
    raw = sample.get(key)
    if raw is None:
        return "", "missing caption"
    try:
        caption = raw.decode("utf-8").strip()[:MAX_CAPTION_CHARS]
    except UnicodeDecodeError:
        return "", "invalid caption"
    return (caption, None) if caption else ("", "empty caption")


def image_of(sample: dict) -> bytes:
    """The bytes of the sample's first image member, b"" when it has none."""
    return next((value for ext, value in sample.items() if ext.lower() in IMAGE_EXTS), b"")


def count_shard(shard: Path, out: Path, settings: Settings) -> Path:
    """Count one shard into its work file and return the file's path."""
    shard = Path(shard)
    file, size = workfiles.path(out, "count", shard), shard.stat().st_size
    if workfiles.is_current(file, settings.fingerprint, shard_bytes=size):
        return file
    matcher, embedder = matcher_for(settings), None
    if settings.near_dup_model or settings.score_model:
        from transferlab.curate.embed import PairEmbedder  # models load only when asked: workers start faster

        embedder = PairEmbedder(settings)
    bad = BadSamples(None, "skip", DataReport(), "sample")
    keys, hashes, status, match_ids, match_ptr = [], [], [], [], [0]
    wanted = {settings.caption_key}
    for sample in iter_samples([shard], bad, lambda ext: ext in wanted or ext.lower() in IMAGE_EXTS, wanted):
        keys.append(key_hash(shard.name, sample["__key__"]))
        caption, reason = read_caption(sample, settings.caption_key)
        image = image_of(sample)
        reason = reason or settings.filters.reason(caption)
        if reason is None and embedder is not None:
            reason = embedder.add(image, caption)
        if reason is None:
            hashes.append(content_hash(caption, image) if settings.dedup else 0)
            if matcher is not None:
                match_ids.extend(matcher(caption))
        else:
            hashes.append(0)
        match_ptr.append(len(match_ids))
        status.append(KEPT if reason is None else CODE[reason])
    models = {} if embedder is None else {e.name: e.fingerprint for e in embedder.encoders}
    info = {"shard": shard.name, "shard_bytes": size, "skipped": dict(bad.report.skipped), "models": models}
    return workfiles.save(file, settings.fingerprint, info, key_hash=np.array(keys, dtype=np.uint64),
                          content_hash=np.array(hashes, dtype=np.uint64), status=np.array(status, dtype=np.uint8),
                          match_ptr=np.array(match_ptr, dtype=np.int64), match_ids=np.array(match_ids, dtype=np.int32),
                          **(embedder.arrays() if embedder is not None else {}))
