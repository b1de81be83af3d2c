"""WinoGAViL (Bitton et al., 2022): association instances of a text cue, 5 to 12 candidate images, and the
candidates that fit the cue, read as DataComp evaluates them (mlfoundations/datacomp eval_utils/wino_eval.py:
`datasets.load_dataset("nlphuji/winogavil", split="test")`, the columns `cue`, `candidate_images`,
`candidates` and `associations`).

The files are read with pyarrow in any layout data/readers/hf_datasets.py reads (DataComp's download leaves a
`load_dataset` cache in `<data root>/hf_cache`, whose images are files the loading script extracted). Every
instance's candidate images go into one image collection, in order, so the encoder embeds them in one pass;
`AssociationData.instances` says which images each cue chooses among.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import torch

from transferlab.config import WinoGAViLSource
from transferlab.data.dataset import ImageTextData
from transferlab.data.images import BadImage, decode_image
from transferlab.data.memory import check_fits
from transferlab.data.readers.hf_datasets import hf_splits, image_bytes
from transferlab.data.report import BadSamples, DataReport
from transferlab.data.samples import progress
from transferlab.errors import UserError

COLUMNS = ("cue", "candidate_images", "candidates", "associations")


@dataclass(frozen=True)
class Instance:
    cue: str
    start: int  # its candidates are images start .. start + len(fits) - 1
    fits: tuple[bool, ...]  # per candidate: whether it is one of the associations


@dataclass
class AssociationData(ImageTextData):
    """The candidate images of every instance (no labels, no captions) and the instances over them. A subset
    (a split role) is of images only: the instances stay with the whole collection."""

    instances: list[Instance] = field(default_factory=list)

    def subset(self, index: torch.Tensor) -> ImageTextData:
        whole = ImageTextData(self.name, self.images, self.captions, report=self.report)
        return whole.subset(index) if len(index) else dataclasses.replace(whole, images=self.images[:0], captions=[])


def read_winogavil(spec: WinoGAViLSource, name: str, size: int, channels: int) -> dict[str, AssociationData]:
    """Every split of the dataset (DataComp evaluates on 'test'), candidate images decoded to [C, size, size]."""
    root = Path(spec.root).expanduser()
    if not root.exists():
        raise UserError(f"Dataset '{name}': {root} does not exist. Set `datasets.{name}.root` to where "
                        f"nlphuji/winogavil was downloaded (DataComp's download_evalsets.py puts it in "
                        f"<data root>/hf_cache).")
    splits = hf_splits(root)
    for split in splits.values():
        missing = [column for column in COLUMNS if column not in split.schema().names]
        if missing:
            raise UserError(f"{split.files[0]} has no column {', '.join(map(repr, missing))}; WinoGAViL's rows have "
                            f"{', '.join(COLUMNS)} (nlphuji/winogavil). Point `datasets.{name}.root` at that dataset.")
    most = 12  # candidates an instance has at most
    check_fits(sum(split.rows() for split in splits.values()) * most, channels, size, name, str(root))
    return {split_name: _read_split(spec, name, split, size, channels) for split_name, split in splits.items()}


def _read_split(spec: WinoGAViLSource, name: str, split, size: int, channels: int) -> AssociationData:
    bad = BadSamples(name, spec.bad_samples, DataReport(), "instance")
    images, instances = [], []
    for where, row in progress(_rows(split.batches(list(COLUMNS))), split.files[0].parent.name, split.rows()):
        candidates, associations = row["candidates"] or [], set(row["associations"] or [])
        pictures = row["candidate_images"] or []
        if not row["cue"] or len(pictures) != len(candidates) or not candidates:
            bad("invalid instance", where, f"the cue is empty, or the {len(pictures)} candidate images are not the "
                                           f"{len(candidates)} candidates")
            continue
        try:
            decoded = [_decode(picture, split.files[0].parent, size, channels) for picture in pictures]
        except BadImage as err:
            bad(err.reason, where, f"a candidate image cannot be read: {err}")
            continue
        instances.append(Instance(row["cue"], len(images), tuple(c in associations for c in candidates)))
        images += decoded
    if not instances:
        raise UserError(f"{split.files[0]}: no usable WinoGAViL instance ({dict(bad.report.skipped)} skipped).")
    bad.report.kept = len(instances)
    return AssociationData(name=name, images=torch.stack(images), captions=[[] for _ in images], report=bad.report,
                           instances=instances)


def _rows(batches):
    for file, first, batch in batches:
        columns = {column: batch.column(column).to_pylist() for column in COLUMNS}
        for j in range(batch.num_rows):
            yield f"{file} row {first + j}", {column: values[j] for column, values in columns.items()}


def _decode(picture, folder: Path, size: int, channels: int) -> torch.Tensor:
    encoded = image_bytes(picture, folder)
    if encoded is None:
        raise BadImage("missing image", f"no bytes, and no file at its path {picture.get('path')!r}"
                       if isinstance(picture, dict) else "no image")
    return decode_image(encoded, size, channels)
