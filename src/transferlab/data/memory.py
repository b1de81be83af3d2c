"""Whether a dataset's images, decoded, fit in memory: `stream: auto`'s threshold, and the check every reader
makes before decoding a collection into memory (free memory as the OS reports it)."""

from __future__ import annotations

import os

from transferlab.errors import UserError

STREAM_ABOVE_BYTES = 2 * 2**30  # `stream: auto` streams a dataset whose images, decoded, would take more


def free_memory() -> int | None:
    """Bytes of physical memory free now, where the OS says (Linux, macOS); None elsewhere."""
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_fits(count: int, channels: int, size: int, name: str, origin: str, streams: bool = False, copies: int = 1,
               more: bool = False) -> None:
    """Refuse, before decoding (or, `more`, while decoding a collection whose size is not known yet), a collection
    whose decoded images would not fit in free memory, `copies` times over (2: decoded one by one, then stacked)."""
    need, free = copies * count * channels * size * size, free_memory()
    if free is not None and need > 0.8 * free:
        fix = f"set `datasets.{name}.stream: true` to decode images batch by batch" if streams else \
            "lower model.image_size, or train on a subset of the data"
        images = f"the first {count} images read of dataset '{name}' already need" if more else \
            f"the {count} images of dataset '{name}' need"
        twice = f" ({copies} copies while they are gathered)" if copies > 1 else ""
        raise UserError(f"{origin}: {images} {need / 2**30:.1f} GiB once decoded at {size}x{size}x{channels}{twice}, "
                        f"more than the {free / 2**30:.1f} GiB of free memory: {fix}.")
