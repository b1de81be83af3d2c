"""open_clip models as evaluation encoders, named as open_clip names them.

- `openclip:<arch>:<pretrained tag>`: a checkpoint of open_clip's pretrained registry
  (`open_clip.list_pretrained_tags_by_model(arch)`; `open_clip.list_pretrained(as_str=True)` prints these very
  names), fetched by open_clip's own download code into its cache. As in `open_clip.create_model`, `/` in an
  architecture reads as `-` (`ViT-B/32` is `ViT-B-32`) and a tag as lower case with `_` for `-`;
- `openclip:hf-hub:<repo>`: an open_clip model published on the Hugging Face hub (config and weights);
- `openclip:local-dir:<directory>`: the same files in a directory (`transferlab export --to openclip` writes one);
- `openclip:<config>:<file>`: an architecture of open_clip's registry (`open_clip.list_models()`) or a
  model-config JSON file (`openclip:path/to/tiny-vit.json`, registered under its file name) with the weights
  of a file, read with safetensors or `torch.load(weights_only=True)`, never unpickled. A path that exists, or
  ends in .safetensors, .pt, .pth or .bin, is a file;
- `openclip:<config>:random`: a seeded random initialisation, asked for. A model-config JSON file alone
  (`openclip:tiny-vit.json`) is one too, as it has no published weights; an architecture of the registry
  alone (`openclip:ViT-B-32`) stops with its pretrained tags (models/weights.py).

Weights are fetched first, on their own, so that a machine without network or cache gets one message
naming the cache and the command that fills it, not a hub client's traceback. The model is then built by
`open_clip.create_model_and_transforms`, with the checkpoint's published preprocessing (mean, std, size,
interpolation, resize mode), its tokenizer, and its activation: a tag trained with QuickGELU (OpenAI's
weights, `openclip:ViT-B-32:openai`) gets QuickGELU, where open_clip itself would only warn of the mismatch.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

import torch
import torch.nn.functional as F

from transferlab.data.transforms import normalize, to_unit
from transferlab.errors import UserError, did_you_mean
from transferlab.models import weights as origin
from transferlab.models.encoder import Encoder, weights_fingerprint
from transferlab.models.pixels import pixel_steps
from transferlab.models.weights import RANDOM, asks_for_random, is_weights_file, read_weights


def resolve_config(config: str) -> str:
    """The registered open_clip name of `config`: a name from `open_clip.list_models()` (`/` read as `-`, as
    open_clip reads it), or a model-config JSON file, registered under its file name."""
    open_clip = _open_clip(config)
    if config.endswith(".json"):
        if not Path(config).is_file():
            raise UserError(f"open_clip model config file {config} does not exist.")
        open_clip.add_model_config(config)
        config = Path(config).stem
    config = config.replace("/", "-")
    if config not in open_clip.list_models():
        raise UserError(f"open_clip has no model config '{config}'.{did_you_mean(config, open_clip.list_models())} "
                        f"See open_clip.list_models() for the names.")
    return config


def load_openclip(spec: str, device: torch.device, seed: int = 0) -> Encoder:
    """The encoder `openclip:<spec>` names (see the module's docstring for the forms of `spec`)."""
    open_clip = _open_clip(spec)
    if spec.startswith(("hf-hub:", "local-dir:")):
        return _load_published(open_clip, spec, device)
    config, _, weights = spec.partition(":")
    config_file = config.endswith(".json")
    config = resolve_config(config)
    if asks_for_random(weights, f"openclip:{spec}") or (config_file and not weights):
        torch.manual_seed(seed)  # a random init is then reproducible
        with quiet():  # open_clip warns "no pretrained weights loaded" when none are asked for
            model, _, transform = open_clip.create_model_and_transforms(config, pretrained=None)
        record = origin.random_init(seed) if weights else origin.random_init(
            seed, "from a model-config file, which has no published weights")
        weights = RANDOM
    elif not weights:
        raise origin.not_named(f"openclip:{config}", "open_clip", open_clip.list_pretrained_tags_by_model(config),
                               f"open_clip.list_pretrained_tags_by_model('{config}')")
    elif is_weights_file(weights):
        model, transform = _with_file(open_clip, config, weights)
        record = origin.weights_file(weights)
    else:
        weights = pretrained_tag(config, weights)
        cfg = open_clip.get_pretrained_cfg(config, weights)
        command = (f"python -c \"import open_clip; open_clip.create_model_and_transforms('{config}', "
                   f"pretrained='{weights}')\"")
        _fetch(f"{config}:{weights}", lambda: open_clip.download_pretrained(cfg), command, cfg)
        with quiet():  # built as the checkpoint was trained: open_clip only warns when its QuickGELU differs
            model, _, transform = open_clip.create_model_and_transforms(config, pretrained=weights,
                                                                        force_quick_gelu=bool(cfg.get("quick_gelu")))
        record = origin.pretrained("open_clip", weights, cfg.get("hf_hub") or cfg.get("url") or cfg.get("file"))
    source = {"library": "open_clip", "architecture": config,
              **({"pretrained": weights} if record["origin"] == "pretrained" else {})}
    return _encoder(f"{config}:{weights}", config, model, transform, _tokenizer(config), device, source, record)


def _open_clip(spec: str):
    try:
        import open_clip
    except ImportError:
        raise UserError(f"openclip:{spec} needs the open_clip_torch package: pip install open_clip_torch") from None
    return open_clip


def _load_published(open_clip, spec: str, device: torch.device) -> Encoder:
    """`hf-hub:<repo>` or `local-dir:<directory>`: open_clip's config and weights files together."""
    if spec.startswith("hf-hub:"):
        repo = spec.removeprefix("hf-hub:")
        if not repo.strip("/"):
            raise UserError("openclip:hf-hub: needs a repository, e.g. openclip:hf-hub:laion/CLIP-ViT-B-32-"
                            "laion2B-s34B-b79K.")
        weights_path = _fetch(spec, lambda: _fetch_hub(repo), f"hf download {repo}")
        source, record = {"library": "open_clip", "hub": repo}, origin.hub("open_clip", repo, weights_path)
    else:  # what `transferlab export --to openclip` writes, and hub repositories hold
        directory = Path(spec.removeprefix("local-dir:"))
        if not (directory / "open_clip_config.json").is_file():
            raise UserError(f"{directory} has no open_clip_config.json; openclip:local-dir:<dir> names a directory "
                            f"with open_clip_config.json and the weights (what transferlab export --to openclip and "
                            f"open_clip's hub repositories hold).")
        source, record = {"library": "open_clip", "directory": str(directory)}, origin.directory(directory)
    with quiet():
        model, _, transform = open_clip.create_model_and_transforms(spec, require_pretrained=True)
    return _encoder(spec, source.get("hub", source.get("directory")), model, transform, _tokenizer(spec), device,
                    source, record)


def _with_file(open_clip, config: str, weights: str):
    """open_clip's model of `config` with the weights of a file, and its transform."""
    state = read_weights(weights)
    with quiet():
        model, _, transform = open_clip.create_model_and_transforms(config, pretrained=None)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # tensors of other shapes
        missing, unexpected = [], [line.strip() for line in str(err).splitlines()[1:]]
    if missing or unexpected:
        raise UserError(f"{weights} does not fit open_clip config '{config}': missing {missing[:4]}, "
                        f"unexpected or of another shape {unexpected[:4]}. Pass the config the checkpoint was "
                        f"trained with.")
    return model, transform


def pretrained_tag(config: str, tag: str) -> str:
    """`tag` as open_clip's registry spells it for `config`, or a UserError listing the known tags."""
    import open_clip

    known = open_clip.list_pretrained_tags_by_model(config)
    if open_clip.is_pretrained_cfg(config, tag):
        return tag.lower().replace("-", "_")  # open_clip's own normalisation of tags
    listing = (f"its tags are {', '.join(known)}" if known else
               "open_clip publishes no pretrained weights for it (see open_clip.list_pretrained())")
    raise UserError(f"'{tag}' in openclip:{config}:{tag} is neither a weights file (no such path, and no "
                    f".safetensors/.pt/.pth/.bin suffix) nor a pretrained tag of open_clip config '{config}': "
                    f"{listing}; or write openclip:{config}:{RANDOM} for a seeded random initialisation."
                    f"{did_you_mean(tag, known)}")


def _fetch_hub(repo: str) -> str:
    """open_clip's config and weights files of hub repository `repo`, into the hub cache; the weights' path."""
    from open_clip.pretrained import download_pretrained_from_hf

    download_pretrained_from_hf(repo, filename="open_clip_config.json")
    return download_pretrained_from_hf(repo)


def _hub_cache() -> str:
    from huggingface_hub import constants

    return constants.HF_HUB_CACHE


def _tokenizer(name: str):
    """open_clip's tokenizer of `name`; configs with a Hugging Face tokenizer fetch it from the hub."""
    import open_clip

    return _fetch(name, lambda: open_clip.get_tokenizer(name),
                  f"python -c \"import open_clip; open_clip.get_tokenizer('{name}')\"", what="tokenizer")


def _fetch(name: str, download, command: str, cfg: dict | None = None, what: str = "weights"):
    """`download()` (open_clip's own fetch of a checkpoint or tokenizer); any failure becomes one actionable
    message."""
    try:
        return download()
    except Exception as err:  # network, cache, authentication or a missing file: all mean "not here"
        url_only = cfg is not None and not cfg.get("hf_hub") and cfg.get("url")
        cache = os.path.expanduser("~/.cache/clip") if url_only else _hub_cache()
        first_line = (str(err).strip().splitlines() or [""])[0][:300]
        raise UserError(f"The {what} of openclip:{name} {'is' if what == 'tokenizer' else 'are'} not in the cache "
                        f"({cache}) and cannot be downloaded here ({type(err).__name__}: {first_line}). On a machine "
                        f"with network run `{command}`, then copy {cache} to this machine (or point HF_HUB_CACHE at "
                        f"the copy)" + ("; or download the weights file and pass openclip:<config>:<file>."
                                        if what == "weights" else ".")) from None


@contextlib.contextmanager
def quiet():
    """open_clip logs at INFO and WARNING through the root logger; evaluation has its own progress output."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def _encoder(name: str, architecture: str, model, transform, tokenizer, device: torch.device,
             source: dict, weights: dict) -> Encoder:
    model = model.to(device).eval()
    cfg = dict(model.visual.preprocess_cfg)
    steps = pixel_steps(transform)
    size = cfg["size"][0] if isinstance(cfg["size"], (tuple, list)) else cfg["size"]
    preprocessing = {**cfg, "pixels": steps.description}
    return Encoder(
        name=f"openclip:{name}", module=model, image_size=size, channels=3,
        preprocess=lambda images: normalize(to_unit(images), steps.mean, steps.std),
        encode_image=lambda images: F.normalize(model.encode_image(images), dim=-1),
        encode_text=lambda texts: F.normalize(model.encode_text(tokenizer(texts).to(device)), dim=-1),
        fingerprint=weights_fingerprint(model, {"openclip": architecture, "preprocess": preprocessing}),
        decode=steps.decode, source={**source, "preprocessing": preprocessing}, weights=weights)
