"""Stage 3, `sample`, one shard at a time: the balancing draws, then the curated shard.

With the pool's entry counts from the plan, each pair still in is kept or dropped by the MetaCLIP rule
(`balance.balanced_keep`); a pair matching no entry is dropped. The shard is then streamed once more and
its kept samples are copied, every member byte for byte, into `<out>/<shard name>.tar` (uncompressed,
with fixed tar metadata, so the same input and options give the same bytes). The shard's fates, what the
tar reader skipped, and the first few removed pairs per reason (caption, matched entries, a thumbnail) go
to `work/<shard>.sample.npz` for the report.

Each sample read is checked against the count stage's record of its key, so a shard edited between the
stages is an error, not a silent misalignment.
"""

from __future__ import annotations

import base64
import io
import re
import tarfile
from pathlib import Path

import numpy as np

from transferlab.curate import workfiles
from transferlab.curate.balance import balanced_keep, key_hash
from transferlab.curate.count import image_of, read_caption
from transferlab.curate.plan import check_unchanged
from transferlab.curate.reasons import CODE, KEPT, reason_of
from transferlab.curate.settings import Settings
from transferlab.data.dataset import DataReport
from transferlab.data.images import BadImage, decode_image, encode_png
from transferlab.data.samples import BadSamples
from transferlab.data.shards import iter_samples
from transferlab.errors import UserError
from transferlab.fileio import atomic_open

THUMBNAIL = 96  # pixels per side of an example's image in the report
EXAMPLE_CHARS = 300
EXAMPLE_ENTRIES = 8
COMPRESSED = re.compile(r"(\.tar)?\.(gz|tgz|bz2|xz)$|\.tar$")


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
    counts, plan_info = workfiles.load(workfiles.path(out, "plan"), fingerprint, "plan", ("counts",))
    if target.exists() and workfiles.is_current(file, fingerprint, shard_bytes=shard.stat().st_size,
                                                plan=plan_info["id"]):
        return file
    counted, info = workfiles.load(workfiles.path(out, "count", shard), fingerprint, "count",
                                   ("key_hash", "match_ptr", "match_ids"))
    check_unchanged(shard, info)
    planned, _ = workfiles.load(workfiles.path(out, "plan", shard), fingerprint, "plan")
    status = final_status(settings, planned["status"], counted, counts["counts"])
    bad = BadSamples(None, "skip", DataReport(), "sample")
    examples: dict[str, list[dict]] = {}
    row = 0
    with atomic_open(target) as handle:
        with tarfile.open(fileobj=handle, mode="w") as tar:
            for sample in iter_samples([shard], bad):
                if row >= len(status) or key_hash(shard.name, sample["__key__"]) != counted["key_hash"][row]:
                    raise UserError(f"{shard} no longer holds the samples it held when counted (sample {row + 1} "
                                    f"differs). Delete its work files and run --stage count on it again.")
                if status[row] == KEPT:
                    _copy(tar, sample)
                else:
                    shown = examples.setdefault(reason_of(int(status[row])), [])
                    if len(shown) < settings.examples:
                        ids = counted["match_ids"][counted["match_ptr"][row]:counted["match_ptr"][row + 1]]
                        shown.append(_example(sample, settings, ids))
                row += 1
        if row != len(status):
            raise UserError(f"{shard} holds fewer samples ({row}) than when counted ({len(status)}). Delete its "
                            f"work files and run --stage count on it again.")
        record = {"shard": shard.name, "shard_bytes": info["shard_bytes"], "plan": plan_info["id"],
                  "output": target.name, "skipped": dict(bad.report.skipped), "examples": examples}
        workfiles.save(file, fingerprint, record, status=status)  # before the shard: a shard implies its record
    return file


def _copy(tar: tarfile.TarFile, sample: dict) -> None:
    for ext, payload in sample.items():
        if ext.startswith("__"):
            continue
        info = tarfile.TarInfo(f"{sample['__key__']}.{ext}")
        info.size, info.mode, info.mtime = len(payload), 0o644, 0
        tar.addfile(info, io.BytesIO(payload))


def _example(sample: dict, settings: Settings, entry_ids: np.ndarray) -> dict:
    """A removed pair as the report shows it."""
    caption, problem = read_caption(sample, settings.caption_key)
    thumbnail = None
    image = image_of(sample)
    if image:
        try:
            thumbnail = base64.b64encode(encode_png(decode_image(image, THUMBNAIL, 3))).decode("ascii")
        except BadImage:
            pass  # the report shows the caption alone
    names = [] if settings.entries is None else [settings.entries.entries[i] for i in entry_ids[:EXAMPLE_ENTRIES]]
    return {"shard": Path(sample["__shard__"]).name, "key": sample["__key__"],
            "caption": caption[:EXAMPLE_CHARS] if problem is None else f"({problem})", "entries": names,
            "image": thumbnail}
