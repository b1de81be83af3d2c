"""timm image backbones as image-only evaluation encoders, named as timm names them.

- `timm:<name>.<tag>` or `timm:<name>:<tag>`: a pretrained checkpoint of `timm.list_pretrained('<name>.*')`,
  fetched by timm's own download code into its cache (`timm:resnet50.a1_in1k` is
  `timm.create_model("resnet50.a1_in1k", pretrained=True)`, as is `timm:resnet50:a1_in1k`);
- `timm:hf-hub:<repo>` (or timm's older `hf_hub:`) and `timm:local-dir:<directory>`: what
  `timm.create_model(..., pretrained=True)` reads from a hub repository or a directory in its layout;
- `timm:<name>:<file>`: the weights of a file (a path that exists or ends in .safetensors, .pt, .pth or .bin),
  read with safetensors or `torch.load(weights_only=True)`; a classifier head in the file is left out;
- `timm:<name>:random`: a seeded random initialisation, asked for. `timm:<name>` alone stops with the
  architecture's pretrained tags (models/weights.py): timm would build a random model without a word.

The embedding is timm's pooled pre-logits feature (the model built with `num_classes=0`: `forward_features`
then `forward_head(pre_logits=True)`), L2-normalised. Preprocessing is timm's evaluation transform of the
checkpoint (`resolve_data_config` + `create_transform`: crop fraction, interpolation, mean and std). A timm
model has no text tower, so the tasks that need text are skipped (evaluate/suite.py).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from transferlab.data.transforms import normalize, to_unit
from transferlab.errors import UserError, did_you_mean
from transferlab.models import weights as origin
from transferlab.models.encoder import Encoder, weights_fingerprint
from transferlab.models.pixels import pixel_steps
from transferlab.models.weights import RANDOM, asks_for_random, is_weights_file, read_weights

SOURCES = ("hf-hub:", "hf_hub:", "local-dir:")  # timm's own prefixes (timm.models.parse_model_name)


def load_timm(spec: str, device: torch.device, seed: int = 0) -> Encoder:
    try:
        import timm
    except ImportError:
        raise UserError(f"timm:{spec} needs the timm package: pip install timm") from None
    if spec.lower().startswith(SOURCES):
        model, record = _from_source(timm, spec)
        name, source = spec, {"library": "timm", "architecture": model.pretrained_cfg.get("architecture")}
    else:
        arch, weights = _parse(timm, spec)
        name, model, record = f"{arch}:{weights}", *_build(timm, arch, weights, seed)
        source = {"library": "timm", "architecture": arch}
    cfg = model.pretrained_cfg  # the published checkpoint's, or the hub's or directory's config
    if record["origin"] == "pretrained":
        source["pretrained"] = cfg.get("tag")
    if record["origin"] in ("pretrained", "hub", "directory") and cfg.get("license"):
        source["license"] = cfg["license"]
    model = model.to(device).eval()
    config = timm.data.resolve_data_config({}, model=model)
    if config["input_size"][0] != 3 or config["input_size"][1] != config["input_size"][2]:
        raise UserError(f"timm:{spec} takes input of shape {config['input_size']}; transferlab evaluates square RGB "
                        f"images.")
    steps = pixel_steps(timm.data.create_transform(**config))
    preprocessing = {**config, "pixels": steps.description}
    return Encoder(
        name=f"timm:{name}", module=model, image_size=int(config["input_size"][1]), channels=3,
        preprocess=lambda images: normalize(to_unit(images), steps.mean, steps.std),
        encode_image=lambda images: F.normalize(model(images), dim=-1), encode_text=None,
        fingerprint=weights_fingerprint(model, {"timm": name, "preprocess": preprocessing}),
        decode=steps.decode, source={**source, "preprocessing": preprocessing}, weights=record)


def _parse(timm, spec: str) -> tuple[str, str]:
    """(architecture, weights) of `<name>[.<tag>][:<tag, file or random>]`; the weights named once."""
    name, _, weights = spec.partition(":")
    arch, _, tag = name.partition(".")  # timm's split_model_name_tag
    if not timm.is_model(arch):
        hint = f" A hub repository is timm:hf-hub:{name}." if "/" in name else ""
        raise UserError(f"timm has no model '{arch}'.{did_you_mean(arch, timm.list_models())} See "
                        f"timm.list_models('<pattern>') for the names.{hint}")
    if tag and weights:
        raise UserError(f"timm:{spec} names its weights twice: the tag '{tag}' and '{weights}'. Write "
                        f"timm:{arch}:{tag} (timm's {name}), or timm:{arch}:{weights}.")
    if not (tag or weights):
        default = timm.models.get_pretrained_cfg(arch)
        raise origin.not_named(f"timm:{arch}", "timm", [n.split(".", 1)[1] for n in timm.list_pretrained(f"{arch}.*")],
                               f"timm.list_pretrained('{arch}.*')", getattr(default, "tag", None))
    return arch, tag or weights


def _build(timm, arch: str, weights: str, seed: int):
    """timm's head-less model of `arch` with `weights` (random, a file or a tag) and their origin record."""
    if asks_for_random(weights, f"timm:{arch}:{weights}"):
        torch.manual_seed(seed)
        return timm.create_model(arch, pretrained=False, num_classes=0), origin.random_init(seed)
    if is_weights_file(weights):
        state = read_weights(weights)
        model = timm.create_model(arch, pretrained=False, num_classes=0)
        _load_backbone(model, state, weights, arch)
        return model, origin.weights_file(weights)
    model = _pretrained(timm, arch, weights)
    cfg = model.pretrained_cfg
    return model, origin.pretrained("timm", cfg.get("tag", weights), cfg.get("hf_hub_id") or cfg.get("url"))


def _pretrained(timm, name: str, tag: str):
    """timm's model `name.tag` with its pretrained weights, fetched (or read from the cache) by timm."""
    tags = [known.split(".", 1)[1] for known in timm.list_pretrained(f"{name}.*")]
    if tag not in tags:
        listing = f"its tags are {', '.join(tags)}" if tags else "timm publishes no pretrained weights for it"
        raise UserError(f"'{tag}' in timm:{name}:{tag} is neither a weights file (no such path, and no .safetensors/"
                        f".pt/.pth/.bin suffix) nor a pretrained tag of timm model '{name}': {listing}; or write "
                        f"timm:{name}:{RANDOM} for a seeded random initialisation.{did_you_mean(tag, tags)}")
    return _fetched(lambda: timm.create_model(f"{name}.{tag}", pretrained=True, num_classes=0), f"timm:{name}:{tag}",
                    f"'{name}.{tag}'", f"timm:{name}:<file>")


def _from_source(timm, spec: str):
    """timm's model from a hub repository or a directory (`hf-hub:<repo>`, `local-dir:<dir>`) and its record."""
    prefix, _, where = spec.partition(":")
    local = prefix.lower() == "local-dir"
    if not where.strip("/"):
        raise UserError(f"timm:{spec} needs a {'directory' if local else 'repository'} after '{prefix}:', e.g. "
                        f"timm:hf-hub:timm/resnet50.a1_in1k.")
    create = functools.partial(timm.create_model, spec, pretrained=True, num_classes=0)
    if not local:
        return _fetched(create, f"timm:{spec}", repr(spec), "timm:<name>:<file>"), origin.hub("timm", where)
    try:
        return create(), origin.directory(where)
    except (OSError, RuntimeError, ValueError) as err:
        first_line = (str(err).strip().splitlines() or [""])[0][:300]
        raise UserError(f"timm cannot load the model directory {where} ({type(err).__name__}: {first_line}). "
                        f"timm:local-dir:<dir> names a directory in timm's layout: config.json and "
                        f"model.safetensors (what timm.models.save_for_hf writes).") from None


def _fetched(create, ref: str, name: str, alternative: str):
    """`create()`, timm's own build with its download; "not cached and offline" becomes one actionable message."""
    try:
        return create()
    except OSError as err:  # the hub client's "not cached and offline", a refused connection, a missing file
        from huggingface_hub import constants

        first_line = (str(err).strip().splitlines() or [""])[0][:300]
        raise UserError(f"The weights of {ref} are not in the cache ({constants.HF_HUB_CACHE}, or torch hub's for URL "
                        f"checkpoints) and cannot be downloaded here ({type(err).__name__}: {first_line}). On a "
                        f"machine with network run `python -c \"import timm; timm.create_model({name}, "
                        f"pretrained=True)\"`, then copy the cache to this machine (or point HF_HUB_CACHE at the "
                        f"copy); or download the weights file and pass {alternative}.") from None


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
