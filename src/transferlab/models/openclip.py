"""open_clip models as evaluation encoders.

- `openclip:<config>`: an architecture of open_clip's registry (`open_clip.list_models()`) or a model-config
  JSON file (`openclip:path/to/tiny-vit.json`, registered under its file name), seeded random init;
- `openclip:<config>:<file>`: with the weights of a file, read with safetensors or `torch.load(weights_only=
  True)`, never unpickled. A path that exists, or ends in .safetensors, .pt, .pth or .bin, is a file;
- `openclip:<arch>:<pretrained tag>`: a checkpoint of open_clip's pretrained registry
  (`open_clip.list_pretrained_tags_by_model(arch)`), fetched by open_clip's own download code into its cache;
- `openclip:hf-hub:<repo>`: an open_clip model published on the Hugging Face hub (config and weights);
- `openclip:local-dir:<directory>`: the same files in a directory (`transferlab export --to openclip` writes one).

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
from transferlab.models.encoder import Encoder, weights_fingerprint
from transferlab.models.pixels import pixel_steps

WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")


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


def load_openclip(spec: str, device: torch.device, seed: int = 0) -> Encoder:
    """The encoder `openclip:<spec>` names (see the module's docstring for the forms of `spec`)."""
    try:
        import open_clip
    except ImportError:
        raise UserError(f"openclip:{spec} needs the open_clip_torch package: pip install open_clip_torch") from None

    if spec.startswith("hf-hub:"):
        repo = spec.removeprefix("hf-hub:")
        if not repo.strip("/"):
            raise UserError("openclip:hf-hub: needs a repository, e.g. openclip:hf-hub:laion/CLIP-ViT-B-32-"
                            "laion2B-s34B-b79K.")
        _fetch(spec, lambda: _fetch_hub(repo), f"hf download {repo}")
        with quiet():
            model, _, transform = open_clip.create_model_and_transforms(spec, require_pretrained=True)
        return _encoder(spec, repo, model, transform, _tokenizer(spec), device, {"library": "open_clip", "hub": repo})
    if spec.startswith("local-dir:"):  # what `transferlab export --to openclip` writes, and hub repositories hold
        directory = Path(spec.removeprefix("local-dir:"))
        if not (directory / "open_clip_config.json").is_file():
            raise UserError(f"{directory} has no open_clip_config.json; openclip:local-dir:<dir> names a directory "
                            f"with open_clip_config.json and the weights (what transferlab export --to openclip and "
                            f"open_clip's hub repositories hold).")
        with quiet():
            model, _, transform = open_clip.create_model_and_transforms(spec, require_pretrained=True)
        return _encoder(spec, str(directory), model, transform, _tokenizer(spec), device,
                        {"library": "open_clip", "directory": str(directory)})
    config, _, weights = spec.partition(":")
    config = resolve_config(config)
    if not weights:
        torch.manual_seed(seed)  # a random init is then reproducible
        with quiet():  # open_clip warns "no pretrained weights loaded" when none are asked for
            model, _, transform = open_clip.create_model_and_transforms(config, pretrained=None)
        source = {"library": "open_clip", "architecture": config, "weights": f"random init, seed {seed}"}
    elif is_weights_file(weights):
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
        source = {"library": "open_clip", "architecture": config, "weights": str(weights)}
    else:
        tag = pretrained_tag(config, weights)
        cfg = open_clip.get_pretrained_cfg(config, tag)
        command = (f"python -c \"import open_clip; open_clip.create_model_and_transforms('{config}', "
                   f"pretrained='{tag}')\"")
        _fetch(f"{config}:{tag}", lambda: open_clip.download_pretrained(cfg), command, cfg)
        with quiet():  # built as the checkpoint was trained: open_clip only warns when its QuickGELU differs
            model, _, transform = open_clip.create_model_and_transforms(config, pretrained=tag,
                                                                        force_quick_gelu=bool(cfg.get("quick_gelu")))
        source = {"library": "open_clip", "architecture": config, "pretrained": tag,
                  "weights": cfg.get("hf_hub") or cfg.get("url") or cfg.get("file")}
    name = ":".join([config, *([source.get("pretrained", weights)] if weights else [])])
    return _encoder(name, config, model, transform, _tokenizer(config), device, source)


def is_weights_file(weights: str) -> bool:
    return Path(weights).exists() or weights.endswith(WEIGHT_SUFFIXES)


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
                    f"{listing}.{did_you_mean(tag, known)}")


def _fetch_hub(repo: str) -> None:
    """open_clip's config and weights files of hub repository `repo`, into the hub cache."""
    from open_clip.pretrained import download_pretrained_from_hf

    download_pretrained_from_hf(repo, filename="open_clip_config.json")
    download_pretrained_from_hf(repo)


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
             source: dict) -> Encoder:
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
        decode=steps.decode, source={**source, "preprocessing": preprocessing})
