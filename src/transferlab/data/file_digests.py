"""Content digests of files, remembered by what `stat` says of them, so a dataset's fingerprint reads its
files once and not on every evaluation.

A digest is kept in `$TRANSFERLAB_CACHE/fingerprints/` (one JSON file per folder of data) under the file's
name with its size, modification time, status-change time and inode. It is reused while all four are the
same; a file written since (new mtime and ctime), replaced (new inode) or resized is read again. The kernel
sets the status-change time to the clock's time on every write and no call sets it back, so content changed
while all four stay the same takes a clock set back or a file system restored from an image: the one case
the cache would miss. An unwritable cache folder only costs the reuse.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

from transferlab.fileio import atomic_write

log = logging.getLogger(__name__)

Stamp = tuple[int, int, int, int]  # size, mtime_ns, ctime_ns, inode


def stamp(status: os.stat_result) -> Stamp:
    return status.st_size, status.st_mtime_ns, status.st_ctime_ns, status.st_ino


class DigestCache:
    """Digests of the files of the folders seen, read from and written back to `root` (one use: `digest` for
    every file, then `save`)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._folders: dict[Path, dict[str, list]] = {}  # resolved folder -> name -> [*stamp, digest]
        self._changed: set[Path] = set()
        self._resolved: dict[Path, Path] = {}

    def digest(self, path: Path, status: os.stat_result, compute: Callable[[], str]) -> str:
        """The digest of `path` (whose `os.stat` is `status`): remembered when its stamp is unchanged, else
        `compute()`d and remembered."""
        parent = self._resolved.get(path.parent) or self._resolved.setdefault(path.parent, path.parent.resolve())
        entries = self._entries(parent)
        now = list(stamp(status))
        known = entries.get(path.name)
        if known is not None and known[:4] == now:
            return known[4]
        value = compute()
        entries[path.name] = [*now, value]
        self._changed.add(parent)
        return value

    def save(self) -> None:
        """Write the folders whose digests changed."""
        for folder in self._changed:
            try:
                atomic_write(self._file(folder), json.dumps({"folder": str(folder), "files": self._folders[folder]}))
            except OSError as err:  # a read-only cache: digests are computed again next time
                log.info("file digests of %s not cached (%s)", folder, err)
        self._changed.clear()

    def _entries(self, folder: Path) -> dict[str, list]:
        if folder not in self._folders:
            self._folders[folder] = self._read(folder)
        return self._folders[folder]

    def _read(self, folder: Path) -> dict[str, list]:
        try:
            stored = json.loads(self._file(folder).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        files = stored.get("files") if isinstance(stored, dict) and stored.get("folder") == str(folder) else None
        return {name: entry for name, entry in files.items() if isinstance(entry, list) and len(entry) == 5} \
            if isinstance(files, dict) else {}

    def _file(self, folder: Path) -> Path:
        name = hashlib.blake2b(str(folder).encode("utf-8", "surrogateescape"), digest_size=16).hexdigest()
        path = self.root / f"{name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        return path
