"""`ImageTextData`: image-text pairs whose images are either decoded once and kept in memory as tensors, or,
for a streamed dataset, only located (`LazyImages`: where each encoded image lies) and decoded batch by batch
by the step loader (data/stream/loader.py).

Every reader (data/readers/) produces one of these, with images at the model's resolution and channel count, so
training and evaluation index tensors (or a loader) instead of decoding files every epoch. What the reader
kept and skipped travels with it (`DataReport`, data/report.py).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch

from transferlab.data.caption_column import CaptionColumn
from transferlab.data.lazy import LazyImages
from transferlab.data.report import DataReport


@dataclass
class ImageTextData:
    """A labelled or unlabelled image-text collection: images in memory, or located for streaming.

    images:     uint8 tensor [N, C, H, W] at the model's input resolution, or, for a streamed dataset,
                `LazyImages` (where each encoded image lies; decoded batch by batch).
    captions:   one list of captions per image (a list, or for a streamed pool a `CaptionColumn` read on
                demand); empty lists only for labelled data without captions (a published classification set
                without `templates`), which classification tasks do not need.
    labels:     int64 tensor [N] of class indices, or None for pure image-text pairs.
    classnames: the class names labels index into, or None.
    classnames_from: where the class names come from (a file, a `ClassLabel` feature, the label strings);
                None when they are only the integer labels themselves, which zero-shot cannot use.
    templates:  zero-shot templates ('{}' for the class name) the dataset publishes, or None: they take the
                place of the suite's `eval.templates` for this dataset.
    """

    name: str
    images: torch.Tensor | LazyImages
    captions: list[list[str]] | CaptionColumn
    labels: torch.Tensor | None = None
    classnames: list[str] | None = None
    classnames_from: str | None = None
    templates: list[str] | None = None
    report: DataReport = field(default_factory=DataReport)

    def __post_init__(self) -> None:
        n = len(self.images)
        if isinstance(self.images, torch.Tensor) and (self.images.dtype != torch.uint8 or self.images.ndim != 4):
            raise ValueError(f"{self.name}: images must be uint8 [N, C, H, W], got {self.images.dtype} "
                             f"{tuple(self.images.shape)}")
        if len(self.captions) != n or (self.labels is not None and len(self.labels) != n):
            raise ValueError(f"{self.name}: {n} images but {len(self.captions)} caption lists"
                             + ("" if self.labels is None else f" and {len(self.labels)} labels"))

    def __len__(self) -> int:
        return len(self.images)

    @property
    def streamed(self) -> bool:
        return isinstance(self.images, LazyImages)

    def subset(self, index: torch.Tensor) -> ImageTextData:
        """The samples at `index` (a 1-D tensor of positions), sharing nothing mutable with self."""
        index = torch.as_tensor(index, dtype=torch.long)
        captions = self.captions.take(index.numpy()) if isinstance(self.captions, CaptionColumn) else \
            [self.captions[i] for i in index.tolist()]
        return dataclasses.replace(self, images=self.images[index], captions=captions,
                                   labels=None if self.labels is None else self.labels[index])
