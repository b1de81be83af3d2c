"""`LazyImages`: encoded images addressed by position, decoded only when a batch needs them.

A streamed dataset keeps, per sample, where its image lies — a shard (or an image file) and a byte range
in it — in three numpy arrays (16 bytes a sample), never its pixels. `decode` reads one image and decodes
it at the model's resolution, its centre square or a random resized crop of the full-resolution image.
It is what loader workers call (data/stream/loader.py); a subset or a concatenation is another LazyImages over the
same files, so splits and mixtures stream like the whole set.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from transferlab.data.images import BadImage, Crop, decode_image
from transferlab.data.tar.layout import BLOCK, KEY_EXT
from transferlab.data.tar.remote import RangeReader, stamp

WHOLE_FILE = -1  # a length that reads the whole file (table sources: one image a file)


def member_key(shard: str, offset: int) -> str | None:
    """The webdataset key of the tar member whose data starts at `offset`, from its header (the 512 bytes
    before): for messages, as the index keeps no keys. None when it cannot be read."""
    reader = RangeReader()
    try:
        header = reader.read(shard, offset - BLOCK, BLOCK) if offset >= BLOCK else b""
    except (OSError, ValueError):
        return None
    finally:
        reader.close()
    match = KEY_EXT.match(header[:100].split(b"\0", 1)[0].decode("utf-8", "replace"))
    return match[1] if match else None


@dataclass
class LazyImages:
    """sources[source[i]] holds image i at bytes offset[i] .. offset[i] + length[i] (or the whole file);
    stamps[s] is the version of source s when it was indexed ("" for files not checked)."""

    sources: list[str]
    stamps: list[str]
    source: np.ndarray  # int32 [N]
    offset: np.ndarray  # int64 [N]
    length: np.ndarray  # int64 [N]
    _checked: dict[int, tuple[str, str] | None] = field(default_factory=dict, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index) -> LazyImages:
        """The images at `index` (positions, or a slice), over the same files."""
        if not isinstance(index, slice):
            index = np.asarray(torch.as_tensor(index, dtype=torch.long).cpu().numpy(), dtype=np.int64)
        return LazyImages(self.sources, self.stamps, self.source[index], self.offset[index], self.length[index])

    @classmethod
    def cat(cls, parts: list[LazyImages]) -> LazyImages:
        sources, stamps, numbers = [], [], []
        for part in parts:
            numbers.append(part.source + len(sources))
            sources += part.sources
            stamps += part.stamps
        return cls(sources, stamps, np.concatenate(numbers).astype(np.int32),
                   np.concatenate([p.offset for p in parts]), np.concatenate([p.length for p in parts]))

    @classmethod
    def whole_files(cls, paths: list[str], positions: list[int]) -> LazyImages:
        """The image files `paths[i]` for i in `positions`, each read whole (a table source's images, one a
        file); `positions` are those of the samples a reader kept (samples.assemble's `stack`)."""
        count = len(positions)
        return cls([paths[i] for i in positions], [""] * count, np.arange(count, dtype=np.int32),
                   np.zeros(count, dtype=np.int64), np.full(count, WHOLE_FILE, dtype=np.int64))

    def where(self, i: int) -> str:
        """Image i for a message: its file, or its shard, sample key (when its tar header can be read) and byte."""
        source, offset = self.sources[self.source[i]], int(self.offset[i])
        if self.length[i] == WHOLE_FILE:
            return source
        key = member_key(source, offset)
        return f"{source}, sample '{key}'" if key else f"{source}, byte {offset}"

    def decode(self, i: int, size: int, channels: int, reader: RangeReader, crop: Crop | None = None,
               steps=None) -> torch.Tensor:
        """Image i as uint8 [channels, size, size] (or as a model's own `steps` make it, images.decode_image);
        BadImage when it cannot be read or decoded, or its shard is gone, changed since it was indexed, or cut
        short. A whole-file image (a table source's) is read by decode_image itself."""
        number = int(self.source[i])
        problem = self._check(number)
        if problem:
            raise BadImage(*problem)
        source, offset, length = self.sources[number], int(self.offset[i]), int(self.length[i])
        if length == WHOLE_FILE:
            return decode_image(Path(source), size, channels, crop, steps)
        try:
            data = reader.read(source, offset, length)
        except OSError as err:
            raise BadImage("unreadable shard", f"{source} cannot be read ({err})") from err
        return decode_image(data, size, channels, crop, steps)

    def fingerprint(self) -> str:
        """A hash of which bytes of which file versions the images are: the feature cache's key."""
        digest = hashlib.sha256("\x00".join(f"{s}\x01{t}" for s, t in zip(self.sources, self.stamps,
                                                                             strict=True)).encode())
        for array in (self.source, self.offset, self.length):
            digest.update(np.ascontiguousarray(array).tobytes())
        return digest.hexdigest()

    def _check(self, number: int) -> tuple[str, str] | None:
        """(reason, detail) why source `number` must not be read — gone, unreachable, or another version than
        the one indexed — checked once per process."""
        if number not in self._checked:
            expected, problem = self.stamps[number], None
            if expected:
                try:
                    now = stamp(self.sources[number])
                except (OSError, ValueError) as err:
                    now = None
                    problem = ("unreachable shard",
                               f"{self.sources[number]} cannot be reached ({type(err).__name__}: {err})")
                if now is not None and now != expected:
                    problem = ("changed shard", f"{self.sources[number]} changed after it was indexed (size:mtime "
                                                f"{expected} then, {now} now), so its byte offsets are stale")
            self._checked[number] = problem
        return self._checked[number]
