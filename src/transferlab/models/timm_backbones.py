"""timm image backbones as image-only evaluation encoders: `timm:<name>[:<pretrained tag or weights file>]`.

- `timm:<name>`: an architecture of `timm.list_models()`, seeded random init;
- `timm:<name>:<tag>`: a pretrained checkpoint of `timm.list_pretrained('<name>.*')`, fetched by timm's own
  download code into its cache (`timm:resnet50:a1_in1k` is timm's `resnet50.a1_in1k`);
- `timm:<name>:<file>`: the weights of a file (a path that exists or ends in .safetensors, .pt, .pth or .bin),
  read with safetensors or `torch.load(weights_only=True)`; a classifier head in the file is left out.

The embedding is timm's pooled pre-logits feature (the model built with `num_classes=0`: `forward_features`
then `forward_head(pre_logits=True)`), L2-normalised. Preprocessing is timm's evaluation transform of the
checkpoint (`resolve_data_config` + `create_transform`: crop fraction, interpolation, mean and std). A timm
model has no text tower, so the tasks that need text are skipped (evaluate/suite.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from transferlab.data.transforms import normalize, to_unit
from transferlab.errors import UserError, did_you_mean
from transferlab.models.encoder import Encoder, weights_fingerprint
from transferlab.models.openclip import is_weights_file, read_weights
from transferlab.models.pixels import pixel_steps


def load_timm(spec: str, device: torch.device, seed: int = 0) -> Encoder:
    try:
        import timm
    except ImportError:
        raise UserError(f"timm:{spec} needs the timm package: pip install timm") from None
    name, _, weights = spec.partition(":")
    if not timm.is_model(name.split(".")[0]):
        raise UserError(f"timm has no model '{name}'.{did_you_mean(name, timm.list_models())} See "
                        f"timm.list_models('<pattern>') for the names.")
    if not weights:
        torch.manual_seed(seed)
        model = timm.create_model(name, pretrained=False, num_classes=0)
        source = {"library": "timm", "architecture": name, "weights": f"random init, seed {seed}"}
    elif is_weights_file(weights):
        state = read_weights(weights)
        model = timm.create_model(name, pretrained=False, num_classes=0)
        _load_backbone(model, state, weights, name)
        source = {"library": "timm", "architecture": name, "weights": weights}
    else:
        model = _pretrained(timm, name, weights)
        cfg = model.pretrained_cfg
        source = {"library": "timm", "architecture": name, "pretrained": cfg.get("tag", weights),
                  "weights": cfg.get("hf_hub_id") or cfg.get("url"),
                  **({"license": cfg["license"]} if cfg.get("license") else {})}
    model = model.to(device).eval()
    config = timm.data.resolve_data_config({}, model=model)
    if config["input_size"][0] != 3 or config["input_size"][1] != config["input_size"][2]:
        raise UserError(f"timm:{spec} takes input of shape {config['input_size']}; transferlab evaluates square RGB "
                        f"images.")
    steps = pixel_steps(timm.data.create_transform(**config))
    preprocessing = {**config, "pixels": steps.description}
    return Encoder(
        name=f"timm:{spec}", module=model, image_size=int(config["input_size"][1]), channels=3,
        preprocess=lambda images: normalize(to_unit(images), steps.mean, steps.std),
        encode_image=lambda images: F.normalize(model(images), dim=-1), encode_text=None,
        fingerprint=weights_fingerprint(model, {"timm": name, "preprocess": preprocessing}),
        decode=steps.decode, source={**source, "preprocessing": preprocessing})


def _pretrained(timm, name: str, tag: str):
    """timm's model `name.tag` with its pretrained weights, fetched (or read from the cache) by timm."""
    tags = [known.split(".", 1)[1] for known in timm.list_pretrained(f"{name}.*")]
    if tag not in tags:
        listing = f"its tags are {', '.join(tags)}" if tags else "timm publishes no pretrained weights for it"
        raise UserError(f"'{tag}' in timm:{name}:{tag} is neither a weights file (no such path, and no .safetensors/"
                        f".pt/.pth/.bin suffix) nor a pretrained tag of timm model '{name}': {listing}."
                        f"{did_you_mean(tag, tags)}")
    try:
        return timm.create_model(f"{name}.{tag}", pretrained=True, num_classes=0)
    except OSError as err:  # the hub client's "not cached and offline", a refused connection, a missing file
        from huggingface_hub import constants

        first_line = (str(err).strip().splitlines() or [""])[0][:300]
        raise UserError(f"The weights of timm:{name}:{tag} are not in the cache ({constants.HF_HUB_CACHE}, or torch "
                        f"hub's for URL checkpoints) and cannot be downloaded here ({type(err).__name__}: "
                        f"{first_line}). On a machine with network run `python -c \"import timm; timm.create_model("
                        f"'{name}.{tag}', pretrained=True)\"`, then copy the cache to this machine (or point "
                        f"HF_HUB_CACHE at the copy); or download the weights file and pass timm:{name}:<file>.") \
            from None


def _load_backbone(model, state: dict, path: str, name: str) -> None:
    """Load a checkpoint into a head-less model: keys of the classifier (timm's `pretrained_cfg['classifier']`)
    are the only ones the file may have beyond the model's."""
    heads = model.pretrained_cfg.get("classifier") or ()
    heads = (heads,) if isinstance(heads, str) else tuple(heads)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # tensors of other shapes
        missing, unexpected = [], [line.strip() for line in str(err).splitlines()[1:]]
    unexpected = [key for key in unexpected if not key.startswith(tuple(f"{head}." for head in heads))]
    if missing or unexpected:
        raise UserError(f"{path} does not fit timm model '{name}': missing {missing[:4]}, unexpected or of another "
                        f"shape {unexpected[:4]}. Pass the architecture the checkpoint was trained with.")
