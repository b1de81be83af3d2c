"""The files the stages hand to each other, in `<out>/work/`.

    <shard>.count.npz   count:  per sample its key hash, content hash, fate so far and matched entries
                                (and embeddings or scores when a model step is on)
    plan.npz            plan:   the entry counts over the pool and the shard list
    <shard>.plan.npz    plan:   per sample its fate after the pool-wide steps (dedup, score filter)
    <shard>.sample.npz  sample: per sample its final fate, the shard's skips, examples of removals and
                                how many of its kept pairs match each entry

Shards are named by file name, so the work files of a pool spread over machines meet in one directory.
Each file is numpy arrays plus a JSON `info` string, read without unpickling, written atomically (a file
is whole or absent) and stamped with the settings' fingerprint, checked on reading.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np

from transferlab.errors import UserError
from transferlab.fileio import atomic_open

WORK = "work"
STAMP = ("fingerprint", "info")
WRITERS = {"count": "count", "plan": "plan", "sample": "sample"}  # file kind -> the stage that writes it


def path(out: Path, kind: str, shard: Path | None = None) -> Path:
    """`<out>/work/<shard name>.<kind>.npz`, or `<out>/work/<kind>.npz` for the pool-wide plan."""
    return Path(out) / WORK / (f"{Path(shard).name}.{kind}.npz" if shard is not None else f"{kind}.npz")


def save(file: Path, fingerprint: str, info: dict, **arrays: np.ndarray) -> Path:
    file.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(file) as handle:
        np.savez(handle, fingerprint=np.array(fingerprint), info=np.array(json.dumps(info)), **arrays)
    return file


def load(file: Path, fingerprint: str, kind: str,
         names: tuple[str, ...] | None = None) -> tuple[dict[str, np.ndarray], dict]:
    """The arrays (those of `names` it has, default all) and info of a work file written with the settings
    of `fingerprint`."""
    stage = WRITERS[kind]
    if not file.is_file():
        raise UserError(f"{file} does not exist: run `transferlab curate ... --stage {stage}` on that shard first "
                        f"(or --stage all), with the same --out.")
    try:
        with np.load(file, allow_pickle=False) as stored:
            arrays = {name: stored[name] for name in stored.files
                      if name not in STAMP and (names is None or name in names)}
            info = json.loads(str(stored["info"]))
            found = str(stored["fingerprint"])
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:
        raise UserError(f"{file} is damaged ({type(err).__name__}: {err}). Delete it and run --stage {stage} on "
                        f"that shard again.") from None
    if found != fingerprint:
        raise UserError(f"{file} was written by a curation with other options (fingerprint {found}, now "
                        f"{fingerprint}). Give every stage the same options, or delete {file.parent} to start over.")
    return arrays, info


def shapes(file: Path, names: tuple[str, ...]) -> dict[str, tuple[int, ...]]:
    """The shapes of the arrays of `names` that a work file (already read with `load`) holds, from their
    headers: no array data is read."""
    found = {}
    with zipfile.ZipFile(file) as archive:
        stored = set(archive.namelist())
        for name in names:
            if f"{name}.npy" in stored:
                with archive.open(f"{name}.npy") as member:
                    major, _ = np.lib.format.read_magic(member)
                    read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
                    found[name] = read(member)[0]
    return found


def is_current(file: Path, fingerprint: str, **expected) -> bool:
    """Whether `file` exists, was written with these settings and has the `expected` info values: then the
    stage that wrote it need not run again."""
    if not file.is_file():
        return False
    try:
        with np.load(file, allow_pickle=False) as stored:
            info = json.loads(str(stored["info"]))
            return str(stored["fingerprint"]) == fingerprint and all(info.get(k) == v for k, v in expected.items())
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        return False
