"""Per-shard sample counts that tools already write beside a pool, read when present.

- webdataset's `wids` shard index, `shardindex.json` (widsindex's default name) or any `*.json` whose
  `__kind__` is "wids-shard-index-v1": `{"shardlist": [{"url": ..., "nsamples": n}, ...]}`;
- img2dataset's per-shard `<shard>_stats.json` (`"successes"`: the samples the shard holds);
- a `sizes.json` mapping shard file names to counts (what open_clip's loader reads).

A count is a claim, not a fact: the index records what it found in each shard and notes every shard whose
published count disagrees (the found count is used). Counts give the progress bar its total before any
shard is read, and, in `sampling: shards`, the size of an epoch.
"""

from __future__ import annotations

import json
from pathlib import Path

from transferlab.data.tar.remote import is_url

WIDS_KIND = "wids-shard-index-v1"


def published_counts(sources: list[str]) -> dict[str, int]:
    """{shard: count} for the shards of `sources` some count file beside them names (local folders only; a
    remote pool's count files are not fetched)."""
    local = [source for source in sources if not is_url(source)]
    if not local:
        return {}
    by_name = {Path(source).name: source for source in local}
    counts: dict[str, int] = {}
    for folder in dict.fromkeys(Path(source).parent for source in local):
        for name, count in {**_sizes_json(folder), **_wids(folder)}.items():
            if name in by_name:
                counts[by_name[name]] = count
    for source in local:
        stats = Path(source).with_name(Path(source).stem + "_stats.json")
        if source not in counts and stats.is_file():
            count = _json(stats).get("successes")
            if isinstance(count, int) and count >= 0:
                counts[source] = count
    return counts


def _json(path: Path) -> dict:
    try:
        value = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _sizes_json(folder: Path) -> dict[str, int]:
    sizes = _json(folder / "sizes.json") if (folder / "sizes.json").is_file() else {}
    return {Path(str(name)).name: count for name, count in sizes.items() if _count(count) is not None}


def _wids(folder: Path) -> dict[str, int]:
    found: dict[str, int] = {}
    for path in sorted(folder.glob("*.json")):
        if path.name.endswith("_stats.json") or path.name == "sizes.json":
            continue
        index = _json(path)
        if index.get("__kind__") != WIDS_KIND or not isinstance(index.get("shardlist"), list):
            continue
        for entry in index["shardlist"]:
            count = _count(entry.get("nsamples")) if isinstance(entry, dict) else None
            if count is not None and isinstance(entry.get("url"), str):
                found[entry["url"].rsplit("/", 1)[-1]] = count
    return found


def _count(value) -> int | None:
    try:
        count = int(value)
    except (TypeError, ValueError):
        return None
    return count if count >= 0 else None
