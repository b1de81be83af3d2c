"""open_clip models as evaluation encoders: `openclip:<config>` or `openclip:<config>:<checkpoint file>`.

The architecture comes from open_clip's registry (`open_clip.list_models()`), or from a model-config JSON
file (`openclip:path/to/tiny-vit.json`, registered under its file name); the weights, when a file is
given, are read with safetensors or `torch.load(weights_only=True)` — never unpickled. Images are
preprocessed as open_clip does (shorter side resized bicubically, centre crop, the model's mean and std),
so numbers agree with open_clip-based tools such as CLIP_benchmark on the same image files.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F

from transferlab.data.transforms import normalize, to_unit
from transferlab.errors import UserError, did_you_mean
from transferlab.models.encoder import Encoder, weights_fingerprint


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a .safetensors file, or from a torch file without unpickling arbitrary objects."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"Checkpoint file {path} does not exist. Give openclip:<config>:<path to a .safetensors "
                        f"or .pt file>, or leave the checkpoint out for a seeded random init.")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a damaged file or pickled code: either way it is not loadable weights
        raise UserError(f"{path} cannot be read as model weights ({type(err).__name__}: {err}). Use a "
                        f"safetensors file or a torch state dict of tensors.") from None
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{path} holds a {type(state).__name__}, not a state dict of tensors. Save the model's "
                        f"state_dict() (safetensors preferred).")
    return {k.removeprefix("module."): v for k, v in state.items()}


def resolve_config(config: str) -> str:
    """The registered open_clip name of `config`: a name from `open_clip.list_models()`, or a model-config JSON
    file, registered under its file name."""
    try:
        import open_clip
    except ImportError:
        raise UserError(f"openclip:{config} needs the open_clip_torch package: pip install open_clip_torch") from None
    if config.endswith(".json"):
        if not Path(config).is_file():
            raise UserError(f"open_clip model config file {config} does not exist.")
        open_clip.add_model_config(config)
        config = Path(config).stem
    if config not in open_clip.list_models():
        raise UserError(f"open_clip has no model config '{config}'.{did_you_mean(config, open_clip.list_models())} "
                        f"See open_clip.list_models() for the names.")
    return config


def load_openclip(config: str, checkpoint: str | None, device: torch.device, seed: int = 0) -> Encoder:
    import open_clip

    config = resolve_config(config)
    torch.manual_seed(seed)  # a random init is then reproducible
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # open_clip warns "no pretrained weights loaded" when none are asked for
    try:
        model = open_clip.create_model(config, pretrained=None)
    finally:
        root.setLevel(level)
    if checkpoint is not None:
        missing, unexpected = model.load_state_dict(read_weights(checkpoint), strict=False)
        if missing or unexpected:
            raise UserError(f"{checkpoint} does not fit open_clip config '{config}': missing {missing[:4]}, "
                            f"unexpected {unexpected[:4]}. Pass the config the checkpoint was trained with.")
    model = model.to(device).eval()
    cfg = model.visual.preprocess_cfg
    tokenizer = open_clip.get_tokenizer(config)
    mean, std = list(cfg["mean"]), list(cfg["std"])
    size = cfg["size"][0] if isinstance(cfg["size"], (tuple, list)) else cfg["size"]
    return Encoder(
        name=f"openclip:{config}" + (f":{checkpoint}" if checkpoint else ""), module=model, image_size=size,
        channels=3, preprocess=lambda images: normalize(to_unit(images), mean, std),
        encode_image=lambda images: F.normalize(model.encode_image(images), dim=-1),
        encode_text=lambda texts: F.normalize(model.encode_text(tokenizer(texts).to(device)), dim=-1),
        fingerprint=weights_fingerprint(model, {"openclip": config, "preprocess": cfg}))
