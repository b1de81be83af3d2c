"""Checkpoint directories: `checkpoints/step_<n>/{model,train_state}.safetensors + meta.json`, whole or absent.

A checkpoint is written into a hidden temporary directory, every file flushed and fsynced, then the
directory is renamed to `step_<n>` and only then does `checkpoints/latest` (a one-line file naming the
directory) move to it. meta.json records a SHA-256 per file, checked on load, so a damaged checkpoint is
reported instead of silently loaded, and resuming falls back to the newest undamaged one. Only the newest
`keep` checkpoints stay (older ones are removed after a new one is complete). Everything is safetensors or
JSON: nothing is ever unpickled. This is the file format alone (training, adaptation, model references and
merging all read or write it); what goes into train_state is train/train_state.py's.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from transferlab.errors import UserError
from transferlab.fileio import atomic_write, commit, fsync_dir, sha256_file, temp_path

MODEL_FILE, STATE_FILE, META_FILE, LATEST = "model.safetensors", "train_state.safetensors", "meta.json", "latest"


def _save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    tmp = temp_path(path)
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp))
    commit(tmp, path)


def save_checkpoint(run_dir: Path, step: int, model_state: dict[str, torch.Tensor],
                    train_tensors: dict[str, torch.Tensor], meta: dict, keep: int | None = None) -> Path:
    """Write checkpoints/step_<step> atomically, point `latest` at it, then keep only the newest `keep`."""
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final, tmp = root / f"step_{step}", root / f".tmp-step_{step}"
    for stale in root.glob(".tmp-step_*"):  # left by a run killed mid-write; one run writes at a time
        shutil.rmtree(stale, ignore_errors=True)
    tmp.mkdir()
    _save_tensors(model_state, tmp / MODEL_FILE)
    _save_tensors(train_tensors, tmp / STATE_FILE)
    meta = {**meta, "step": step, "sha256": {name: sha256_file(tmp / name) for name in (MODEL_FILE, STATE_FILE)}}
    atomic_write(tmp / META_FILE, json.dumps(meta, indent=1))
    if final.exists():  # left by a run that died between this rename and moving `latest`
        shutil.rmtree(final)
    os.replace(tmp, final)
    fsync_dir(root)
    atomic_write(root / LATEST, final.name + "\n")
    if keep is not None:
        for old in checkpoints_newest_first(run_dir)[keep:]:
            if old != final:
                shutil.rmtree(old, ignore_errors=True)
    return final


def checkpoints_newest_first(run_dir: Path) -> list[Path]:
    """The step_<n> directories of a run, highest step first (complete or not)."""
    root = Path(run_dir) / "checkpoints"
    steps = [(int(p.name[5:]), p) for p in root.glob("step_*") if p.is_dir() and p.name[5:].isdigit()]
    return [path for _, path in sorted(steps, reverse=True)]


def latest_checkpoint(run_dir: Path) -> Path | None:
    pointer = Path(run_dir) / "checkpoints" / LATEST
    if not pointer.is_file():
        return None
    path = pointer.parent / pointer.read_text(encoding="utf-8").strip()
    return path if (path / META_FILE).is_file() else None


def read_newest_usable(run_dir: Path, warn) -> tuple[Path, dict, dict, dict]:
    """(path, meta, model, train state) of the newest undamaged checkpoint; `warn(message)` for each one
    passed over. `latest` names the newest complete checkpoint, so it is tried first."""
    pointed = latest_checkpoint(run_dir)
    candidates = ([pointed] if pointed else []) + [p for p in checkpoints_newest_first(run_dir) if p != pointed]
    for path in candidates:
        try:
            return (path, *read_checkpoint(path))
        except UserError as err:
            warn(f"{err} Trying the previous checkpoint.")
    raise UserError(f"--resume was given but {Path(run_dir) / 'checkpoints'} has no usable checkpoint"
                    f"{' (all are damaged)' if candidates else ' yet'}. Start the run again without --resume "
                    f"(into an empty --out directory).")


def read_checkpoint(path: Path, with_train_state: bool = True) -> tuple[dict, dict, dict]:
    """(meta, model tensors, train-state tensors) of a checkpoint directory, checksums verified."""
    path = Path(path)
    try:
        meta = json.loads((path / META_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise UserError(f"{path / META_FILE} cannot be read ({err}); {path} is not a complete transferlab "
                        f"checkpoint. Point at another step_<n> directory or the run directory.") from None
    names = [MODEL_FILE] + ([STATE_FILE] if with_train_state else [])
    for name in names:
        if not (path / name).is_file() or sha256_file(path / name) != meta.get("sha256", {}).get(name):
            raise UserError(f"{path / name} is missing or does not match its checksum in meta.json: the "
                            f"checkpoint is damaged. Use an earlier checkpoints/step_<n> directory.")
    model = load_file(str(path / MODEL_FILE))
    state = load_file(str(path / STATE_FILE)) if with_train_state else {}
    return meta, model, state
