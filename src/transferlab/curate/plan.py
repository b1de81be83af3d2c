"""Stage 2, `plan`, once over the pool: the decisions that need every shard, then the entry counts.

Reading the count files of all shards in pool order, it removes exact duplicates (first occurrence kept),
near-duplicate images and captions, and the pairs below the score filter's quantile, in that order; and
it sums, over the pairs still in, the metadata entries they match: the counts c_e the balancing samples
with (summed as the count files are read, then corrected by reading again the shards those steps removed
pairs from). It writes `work/plan.npz` (the counts and the shard list) and one `work/<shard>.plan.npz` per shard
(each pair's fate so far).

Its memory is a byte per pair, plus 8 bytes per pair for exact dedup and 4 for the score filter, plus
the near-duplicate index of one modality at a time (4 bytes per embedding dimension per pair, plus 8): the
only stage whose memory grows with the pool. The embeddings are not all loaded: they are read from the
count files shard by shard, once to train the index (beyond the exact search's size), once to fill it and
once to search it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from transferlab.curate import workfiles
from transferlab.curate.dedup import first_occurrences, near_duplicates
from transferlab.curate.filters import top_fraction
from transferlab.curate.reasons import CODE, KEPT
from transferlab.curate.settings import Settings
from transferlab.errors import UserError

NEAR = (("image_embeddings", "near-duplicate image"), ("caption_embeddings", "near-duplicate caption"))


def check_unchanged(shard: Path, info: dict) -> None:
    if Path(shard).stat().st_size != info["shard_bytes"]:
        raise UserError(f"{shard} changed since it was counted ({info['shard_bytes']} bytes then, "
                        f"{Path(shard).stat().st_size} now). Count it again: delete its work files and re-run "
                        f"--stage count on it.")


def plan(shards: list[Path], out: Path, settings: Settings) -> Path:
    """Decide the pool-wide steps and count entries; return the path of plan.npz."""
    planner = Planner(out, settings)
    for shard in shards:
        planner.read(shard)
    return planner.finish(shards)


class Planner:
    """The plan in two steps: `read` each shard's count file, in pool order (as the count stage finishes
    them, when one process runs both), then `finish`: the pool-wide steps, the counts, the files."""

    def __init__(self, out: Path, settings: Settings) -> None:
        self.out, self.settings = Path(out), settings
        self.statuses, self.hashes, self.scores, self.models, self.dims = [], [], [], {}, {}
        self.counts = EntryCounts(settings)

    def read(self, shard: Path) -> None:
        file = workfiles.path(self.out, "count", shard)
        arrays, info = workfiles.load(file, self.settings.fingerprint, "count",
                                      ("status", "content_hash", "scores", "match_ptr", "match_ids"))
        check_unchanged(shard, info)
        for name, print_ in info["models"].items():
            if self.models.setdefault(name, print_) != print_:
                raise UserError(f"Shards were counted with different weights of model {name}; {shard} differs from "
                                f"the shards before it. Count every shard with the same model.")
        self.statuses.append(arrays["status"].copy())
        kept = arrays["status"] == KEPT
        self.counts.add(arrays, kept)
        self.hashes.append(arrays["content_hash"][kept])
        if "scores" in arrays and len(arrays["scores"]):
            self.scores.append(arrays["scores"])
        if self.settings.near_dup_model:  # the embeddings, a row per pair kept, are read by the search shard by shard
            for name, shape in workfiles.shapes(file, tuple(name for name, _ in NEAR)).items():
                if shape[0]:
                    self.dims[name] = shape[1]

    def finish(self, shards: list[Path]) -> Path:
        """Decide the pool-wide steps over the shards read (`shards`, in the order read) and write the plan."""
        settings, statuses = self.settings, self.statuses
        status = np.concatenate(statuses) if statuses else np.zeros(0, dtype=np.uint8)
        candidate = np.flatnonzero(status == KEPT)  # the pairs with embeddings, in pool order
        alive = np.ones(len(candidate), dtype=bool)

        def remove(mask: np.ndarray, reason: str) -> None:
            status[candidate[alive & mask]] = CODE[reason]
            alive[mask] = False

        if settings.dedup and len(candidate):
            remove(~first_occurrences(np.concatenate(self.hashes)), "exact duplicate")
        if settings.near_dup_model:
            found = {}
            kept_per_shard = [int((s == KEPT).sum()) for s in statuses]
            for name, reason in NEAR:
                if name in self.dims:
                    rows = ShardEmbeddings(shards, self.out, settings.fingerprint, name, self.dims[name], alive,
                                           kept_per_shard)
                    mask = np.zeros(len(alive), dtype=bool)
                    mask[np.flatnonzero(alive)] = near_duplicates(rows, settings.near_dup_threshold)
                    found[reason] = mask
            for reason, mask in found.items():  # both searched on the same pairs; an image duplicate counts first
                remove(mask, reason)
        if settings.score_model and alive.any():
            survivors = np.flatnonzero(alive)
            low = np.zeros(len(alive), dtype=bool)
            low[survivors] = ~top_fraction(np.concatenate(self.scores)[survivors], settings.score_keep)
            remove(low, "low score")
        return _write(shards, self.out, settings, status, statuses, self.counts)


class ShardEmbeddings:
    """One modality's embeddings of the pairs still in (`alive`, over the pairs the count stage kept), read
    from the count files shard by shard: the near-duplicate search's `Blocks`."""

    def __init__(self, shards: list[Path], out: Path, fingerprint: str, name: str, dim: int, alive: np.ndarray,
                 kept_per_shard: list[int]) -> None:
        self.shards, self.out, self.fingerprint, self.name, self.dim = shards, out, fingerprint, name, dim
        ends = np.cumsum(kept_per_shard)
        self.alive = [alive[end - size:end] for end, size in zip(ends, kept_per_shard, strict=True)]

    def __len__(self) -> int:
        return int(sum(a.sum() for a in self.alive))

    def blocks(self):
        for shard, alive in zip(self.shards, self.alive, strict=True):
            if not alive.any():
                continue
            file = workfiles.path(self.out, "count", shard)
            arrays, _ = workfiles.load(file, self.fingerprint, "count", (self.name,))
            rows = arrays.get(self.name, np.zeros((0, self.dim), dtype=np.float32))
            if rows.shape != (len(alive), self.dim):
                raise UserError(f"{file} holds {rows.shape[0]} rows of {self.name} for {len(alive)} pairs it kept. "
                                f"Delete it and run --stage count on {shard.name} again.")
            yield rows[alive]


class EntryCounts:
    """The entry counts c_e, summed shard by shard over the pairs still in. Counted as each count file is
    first read, over the pairs the count stage kept; the pool-wide steps only remove pairs, so a shard they
    removed pairs of is read again and those pairs' matches taken away (`remove`)."""

    def __init__(self, settings: Settings) -> None:
        entries = settings.entries
        self.counts = np.zeros(0 if entries is None else len(entries.entries), dtype=np.int64)
        self.on = entries is not None

    def add(self, arrays: dict[str, np.ndarray], rows: np.ndarray, sign: int = 1) -> None:
        """Count (sign 1) or take away (-1) the matches of the pairs of one count file where `rows` is True."""
        if self.on:
            matched = np.repeat(rows, np.diff(arrays["match_ptr"]))
            self.counts += sign * np.bincount(arrays["match_ids"][matched], minlength=len(self.counts))

    def remove(self, out: Path, shard: Path, fingerprint: str, counted: np.ndarray, planned: np.ndarray) -> None:
        """Take away the matches of the pairs of `shard` that the pool-wide steps removed."""
        removed = (counted == KEPT) & (planned != KEPT)
        if self.on and removed.any():
            arrays, _ = workfiles.load(workfiles.path(out, "count", shard), fingerprint, "count",
                                       ("match_ptr", "match_ids"))
            self.add(arrays, removed, sign=-1)


def _write(shards: list[Path], out: Path, settings: Settings, status: np.ndarray, counted: list[np.ndarray],
           counts: EntryCounts) -> Path:
    """Each shard's fate so far, and the entry counts over the pairs still in."""
    names, start = [shard.name for shard in shards], 0
    for shard, before in zip(shards, counted, strict=True):
        mine = status[start:start + len(before)]
        start += len(before)
        counts.remove(out, shard, settings.fingerprint, before, mine)
        workfiles.save(workfiles.path(out, "plan", shard), settings.fingerprint, {"shard": shard.name}, status=mine)
    # the plan's identity: a shard sampled under another plan (the pool grew, say) is sampled again
    digest = hashlib.sha256(json.dumps(names).encode() + status.tobytes() + counts.counts.tobytes())
    info = {"shards": names, "pairs": int(len(status)), "id": digest.hexdigest()[:16]}
    return workfiles.save(workfiles.path(out, "plan"), settings.fingerprint, info, counts=counts.counts)
