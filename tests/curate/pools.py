"""Tiny webdataset pools for the curation tests, written member by member so any defect can be planted."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path


def write_shard(path: Path, samples: list[dict[str, bytes | str]]) -> Path:
    """A tar with one member `<key>.<ext>` per item of each sample ({"__key__": key, ext: payload})."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for sample in samples:
            for ext, payload in sample.items():
                if ext == "__key__":
                    continue
                data = payload.encode("utf-8") if isinstance(payload, str) else payload
                info = tarfile.TarInfo(f"{sample['__key__']}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def caption_pool(folder: Path, captions: list[str], shards: int = 1, image: bool = False) -> list[Path]:
    """`captions` dealt round-robin into `shards` shards, keys unique across the pool; with `image`, each
    sample gets a distinct few-byte .jpg member (not a decodable image: only its bytes matter)."""
    dealt: list[list[dict]] = [[] for _ in range(shards)]
    for i, caption in enumerate(captions):
        sample = {"__key__": f"s{i:07d}", "txt": caption}
        if image:
            sample["jpg"] = f"image {i}".encode()
        dealt[i % shards].append(sample)
    return [write_shard(folder / f"shard-{n:04d}.tar", samples) for n, samples in enumerate(dealt)]


def read_shard(path: Path) -> dict[str, dict[str, bytes]]:
    """key -> ext -> payload of every member of a tar."""
    found: dict[str, dict[str, bytes]] = {}
    with tarfile.open(path) as tar:
        for member in tar:
            key, ext = member.name.split(".", 1)
            found.setdefault(key, {})[ext] = tar.extractfile(member).read()
    return found


def kept_keys(out: Path) -> set[str]:
    return {key for shard in sorted(out.glob("*.tar")) for key in read_shard(shard)}
