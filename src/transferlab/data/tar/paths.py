"""The shards a pattern names: local files (a file, a folder, a glob, a brace pattern), or URLs; torch-free,
so curation's main process does not import the training stack."""

from __future__ import annotations

import glob
from pathlib import Path

from braceexpand import braceexpand

from transferlab.data.tar.remote import is_url, local_path
from transferlab.errors import UserError


def expand_sources(pattern: str) -> list[str]:
    """The shards `pattern` names: local files as `expand_shards` finds them, or URLs (a brace pattern is
    expanded; a URL's existence is checked when it is read)."""
    if not is_url(pattern):
        return [str(path) for path in expand_shards(local_path(pattern))]
    return list(dict.fromkeys(braceexpand(pattern)))


def expand_shards(pattern: str) -> list[Path]:
    """The shard files `pattern` names: a .tar file, a directory (its *.tar, sorted), a glob, or a brace
    pattern such as "dir/shard-{000..009}.tar" (each expansion may itself be a file, directory or glob)."""
    found: dict[Path, None] = {}
    missing = []
    for part in braceexpand(str(pattern)):
        path = Path(part).expanduser()
        if path.is_dir():
            found.update(dict.fromkeys(sorted(path.glob("*.tar"))))
        elif glob.has_magic(part):
            found.update(dict.fromkeys(Path(p) for p in sorted(glob.glob(str(path))) if Path(p).is_file()))
        elif path.is_file():
            found[path] = None
        else:
            missing.append(part)
    if missing and found:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise UserError(f"Shard pattern '{pattern}': {len(missing)} of the files it names do not exist ({shown}). "
                        f"Fix the pattern's range, or restore the missing shards.")
    if not found:
        raise UserError(f"No shards match '{pattern}'. Set the dataset's `shards` to a .tar file, a folder of .tar "
                        f"files, a glob or a brace pattern such as data/shard-{{000000..000009}}.tar (relative paths "
                        f"start from where you run transferlab).")
    return list(found)
