"""One pass of the image encoder per (model, dataset, split), cached on disk.

Embeddings are stored in `eval/features/<dataset>_<split>.safetensors` together with a fingerprint of
the model weights, the preprocessing and the images; a later evaluation with the same fingerprint reads
the file instead of running the encoder, and any change to the model or the data invalidates it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm import tqdm

from transferlab.data.dataset import ImageTextData
from transferlab.fileio import commit, temp_path
from transferlab.models.dual_encoder import DualEncoder


def model_fingerprint(model: DualEncoder) -> str:
    digest = hashlib.sha256(json.dumps(model.spec.model_dump(mode="json"), sort_keys=True).encode())
    for name, tensor in sorted(model.saved_state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def data_fingerprint(data: ImageTextData) -> str:
    return hashlib.sha256(data.images.contiguous().numpy().tobytes()).hexdigest()


@torch.no_grad()
def embed_images(model: DualEncoder, images: torch.Tensor, batch_size: int = 512, desc: str = "embed") -> torch.Tensor:
    """Normalised image embeddings [N, D] (float32, CPU) of uint8 images [N, C, H, W]."""
    device = model.logit_scale.device
    was_training = model.training
    model.eval()
    chunks = []
    for start in tqdm(range(0, len(images), batch_size), desc=desc, unit="batch", leave=False,
                      disable=len(images) <= batch_size):
        batch = model.preprocess(images[start:start + batch_size].to(device))
        chunks.append(model.encode_image(batch).float().cpu())
    model.train(was_training)
    return torch.cat(chunks) if chunks else torch.zeros(0, model.spec.embed_dim)


def cached_embeddings(model: DualEncoder, data: ImageTextData, split: str, cache_dir: Path | None,
                      fingerprint: str, batch_size: int = 512) -> torch.Tensor:
    """Embeddings of `data`, read from `cache_dir` when the fingerprints match, else computed and stored."""
    key = hashlib.sha256(f"{fingerprint}:{data_fingerprint(data)}".encode()).hexdigest()
    path = None if cache_dir is None else Path(cache_dir) / f"{data.name}_{split}.safetensors"
    if path is not None and path.is_file():
        with safe_open(str(path), framework="pt") as handle:
            if (handle.metadata() or {}).get("fingerprint") == key:
                return handle.get_tensor("embeddings")
    embeddings = embed_images(model, data.images, batch_size, desc=f"embed {data.name}/{split}")
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_path(path)
        save_file({"embeddings": embeddings.contiguous()}, str(tmp), metadata={"fingerprint": key})
        commit(tmp, path)
    return embeddings
