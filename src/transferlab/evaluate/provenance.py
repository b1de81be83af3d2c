"""Where a results.json came from: the code (transferlab's version and git commit, the libraries that
compute features), the model's weights (models/weights.py: a pretrained tag and its source, a file and its
hash, a run and checkpoint, or a random initialisation and its seed), the hardware and precision, the suite's
content and each dataset's data, so that a leaderboard can refuse to compare results that are not alike."""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import subprocess
from pathlib import Path

import torch

import transferlab
from transferlab.config import Suite
from transferlab.models.encoder import Encoder

LIBRARIES = {"open_clip": "open_clip_torch", "timm": "timm", "transformers": "transformers",
             "sentence_transformers": "sentence-transformers"}
PATH_KEYS = ("root", "shards", "table", "images")


def provenance(encoder: Encoder, suite: Suite, datasets: dict[str, dict]) -> dict:
    """The provenance block of results.json; `datasets` maps each dataset's name to its fingerprint entry."""
    commit, dirty = _git_state(Path(transferlab.__file__).resolve().parent)
    parameter = next(encoder.module.parameters(), None) if encoder.module is not None else None
    return {"transferlab": transferlab.__version__, "commit": commit, "dirty": dirty,
            "libraries": {"torch": torch.__version__,  # with its build (+cpu, +cu130): kernels differ
                          **{name: _version(package) for name, package in LIBRARIES.items()}},
            "device": str(parameter.device if parameter is not None else torch.device("cpu")),
            "precision": str(parameter.dtype if parameter is not None else torch.float32).replace("torch.", ""),
            "weights": encoder.weights or {"origin": "not recorded"}, "suite_hash": suite_hash(suite),
            "datasets": datasets}


def suite_hash(suite: Suite) -> str:
    """A hash of what the suite asks for (its datasets' options and the tasks'), not of how it is named or
    where its files lie on this machine (the dataset fingerprints stand for the data)."""
    content = suite.model_dump(mode="json", exclude={"name"})
    for dataset in content["datasets"].values():
        for key in PATH_KEYS:
            dataset.pop(key, None)
    return hashlib.blake2b(json.dumps(content, sort_keys=True).encode(), digest_size=16).hexdigest()


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


@functools.cache
def _git_state(folder: Path) -> tuple[str | None, bool | None]:
    """The commit of the checkout transferlab runs from, and whether its tracked files differ from it;
    (None, None) for an installed package."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, timeout=10)
        if commit.returncode != 0:
            return None, None
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=folder,
                                capture_output=True, text=True, timeout=30)
        return commit.stdout.strip(), bool(status.stdout.strip()) if status.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None, None
