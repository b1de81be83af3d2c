"""Per-sample metadata rows stored beside the images of CLIP_benchmark-layout shards, as DataComp's downloads of
its WILDS and fairness tasks hold them: each sample's `.npy` member is a row of integers (its region, year,
income group, ...) that the worst-group metrics group samples by (evaluate/group_metrics.py).

The rows are read in shard order, as DataComp's metadata loader reads them, and belong to the samples the
dataset reader kept only when it kept them all: a split whose reader skipped a sample, or whose `.cls`
labels differ from the rows' samples, is refused rather than misaligned.
"""

from __future__ import annotations

import io

import numpy as np

from transferlab.config import ClipBenchmarkSource, DataSource
from transferlab.data.dataset import ImageTextData
from transferlab.data.splits import VAL_NAMES
from transferlab.errors import UserError

PUBLISHED_TEST = ("test", *VAL_NAMES)  # the folders the test role is read from, in order


def read_sample_metadata(spec: DataSource, split: str, data: ImageTextData) -> np.ndarray | None:
    """The metadata rows [N, F] of the `split` role of a dataset (`data`, as read), or None when its source
    stores none (not CLIP_benchmark's layout, or shards without `.npy` members)."""
    if not isinstance(spec, ClipBenchmarkSource):
        return None
    from transferlab.data.readers.clip_benchmark import local_root, split_shards
    from transferlab.data.stream.shard_samples import iter_samples
    from transferlab.data.tar.paths import expand_sources

    root = local_root(spec.root)
    names = PUBLISHED_TEST if split == "test" else (split,)
    pattern = next((found for name in names if (found := split_shards(root / name))), None)
    if pattern is None:
        return None
    rows, labels = [], []
    for sample in iter_samples(expand_sources(pattern), keep=lambda ext: ext in ("npy", "cls"), text=("cls",)):
        if "npy" not in sample:
            return None if not rows else _refuse(root, f"sample '{sample['__key__']}' has no .npy member")
        rows.append(_row(sample["npy"], sample["__shard__"], sample["__key__"]))
        label = sample.get("cls", b"")
        labels.append((label.decode("utf-8", "replace") if isinstance(label, bytes) else label).strip())
    skipped = sum(data.report.skipped.values())
    if len(rows) != len(data) or skipped:
        _refuse(root, f"{len(rows)} metadata rows for the {len(data)} samples read ({skipped} skipped as bad)")
    numbers = [int(x) if x.lstrip("-").isdigit() else None for x in labels]
    if data.labels is not None and numbers != data.labels.tolist():
        _refuse(root, "the .cls labels beside the metadata rows are not the labels of the samples read, in order")
    widths = {row.shape for row in rows}
    if len(widths) > 1:
        _refuse(root, f"the rows have different shapes ({', '.join(map(str, sorted(widths)))})")
    return np.stack(rows) if rows else None


def _row(raw: bytes | str, shard: str, key: str) -> np.ndarray:
    try:
        row = np.load(io.BytesIO(raw if isinstance(raw, bytes) else raw.encode()), allow_pickle=False)
    except ValueError as err:  # not an .npy file, or one holding Python objects (never unpickled)
        raise UserError(f"{shard}, sample '{key}': the .npy member is not a numeric array ({err}). Download the "
                        f"dataset again.") from None
    if row.ndim != 1 or not np.issubdtype(row.dtype, np.integer):
        raise UserError(f"{shard}, sample '{key}': the .npy member holds {row.dtype} {row.shape}, not a row of "
                        f"integers (the sample's group metadata). Download the dataset again.")
    return row.astype(np.int64)


def _refuse(root, why: str) -> None:
    raise UserError(f"{root}: the group metadata (.npy members) cannot be matched to the samples: {why}. The "
                    f"worst-group metrics need every sample read; set the dataset's bad_samples to error to find "
                    f"a bad one, or download the dataset again.")
