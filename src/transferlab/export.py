"""`transferlab export RUN --to openclip|safetensors --out DIR`: a trained model in a form other tools load.

- `--to openclip`, for runs whose towers are both `openclip:<config>` (models/openclip_towers.py): open_clip's
  own checkpoint. `DIR/open_clip_model.safetensors` holds the weights under open_clip's CLIP keys (checked by
  a strict load into `open_clip.create_model(<config>)` before anything is written) and
  `DIR/open_clip_config.json` the model config and the preprocessing the run trained with — the layout of
  open_clip's hub repositories, so `open_clip.create_model_and_transforms('local-dir:DIR')` loads it, as does
  `create_model_and_transforms(<config>, pretrained='DIR/open_clip_model.safetensors')` and, once uploaded,
  `hf-hub:<repo>` (and transferlab's `openclip:hf-hub:<repo>`).
- `--to safetensors`, for any run: `DIR/model.safetensors` with every weight, `DIR/transferlab_model.json`
  with the model's definition and recipe; `transferlab.models.exported.load_exported(DIR)` loads it.

Both write `DIR/README.md`, a model card naming the source run and checkpoint, the preprocessing, the loading
code and the run's evaluation results when it has them. Files are written to a temporary name and renamed.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from transferlab.errors import UserError
from transferlab.evaluate.model_card import write_model_card
from transferlab.fileio import atomic_write, commit, temp_path
from transferlab.models.exported import CONFIG_FILE, FORMAT, WEIGHTS_FILE
from transferlab.models.references import LoadedModel, load_model

FORMATS = ("openclip", "safetensors")
OPENCLIP_WEIGHTS = "open_clip_model.safetensors"
OPENCLIP_CONFIG = "open_clip_config.json"


def export_model(ref: str, to: str, out: Path) -> list[Path]:
    """Export the run or checkpoint `ref` as `to` into the new or empty directory `out`; the files written."""
    if to not in FORMATS:
        raise UserError(f"--to must be one of {', '.join(FORMATS)}, not '{to}'.")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{out} already exists and is not empty; export writes into a new or empty directory. "
                        f"Pass another --out.")
    item = load_model(ref, torch.device("cpu"))
    if item.recipe is None:
        raise UserError(f"'{ref}' is not a transferlab run or checkpoint; export writes models transferlab trained. "
                        f"Models from open_clip, Hugging Face or timm are already in their library's format.")
    out.mkdir(parents=True, exist_ok=True)
    files = _openclip(item, out) if to == "openclip" else _safetensors(item, out)
    return files + [_card(item, out, to)]


def _openclip(item: LoadedModel, out: Path) -> list[Path]:
    import open_clip

    from transferlab.models.openclip import quiet, resolve_config

    spec = item.recipe.model
    names = {spec.image.name if spec.image else None, spec.text.name if spec.text else None}
    if len(names) != 1 or not str(next(iter(names))).startswith("openclip:") or spec.query is not None:
        raise UserError(f"--to openclip needs a run whose image and text towers are one open_clip config "
                        f"(model.image.name = model.text.name = openclip:<config>); this run has image tower "
                        f"{spec.image.name if spec.image else None} and text tower "
                        f"{spec.text.name if spec.text else None}. Use --to safetensors.")
    name = resolve_config(next(iter(names)).removeprefix("openclip:"))  # registers a config file
    with quiet():  # open_clip warns that no pretrained weights were asked for
        clip = open_clip.create_model(name, pretrained=None)  # the model users build: CLIP keys
    state = _openclip_state(item.encoder.module.state_dict(), set(clip.state_dict()))
    try:
        clip.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise UserError(f"The weights of {item.checkpoint} do not fit open_clip config '{name}' "
                        f"({str(err).splitlines()[0]}). Was the run trained with that config?") from None
    model_cfg = open_clip.get_model_config(name)
    preprocess = {"size": spec.image_size, "mean": list(spec.mean), "std": list(spec.std), "interpolation": "bicubic",
                  "resize_mode": "shortest"}  # transferlab's decoding: shorter side bicubic, centre crop
    weights = out / OPENCLIP_WEIGHTS
    tmp = temp_path(weights)
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp))
    commit(tmp, weights)
    atomic_write(out / OPENCLIP_CONFIG, json.dumps({"model_cfg": model_cfg, "preprocess_cfg": preprocess}, indent=1))
    return [weights, out / OPENCLIP_CONFIG]


def _openclip_state(ours: dict[str, torch.Tensor], keys: set[str]) -> dict[str, torch.Tensor]:
    """The DualEncoder's weights under open_clip's keys: `visual.*` from the image tower, the text transformer's
    at top level (or under `text.` for open_clip's custom-text models), the temperature and bias as they are."""
    state = {}
    for key, value in ours.items():
        if key.startswith("image_tower."):
            state[key.removeprefix("image_tower.")] = value
        elif key.startswith("text_tower.text."):
            inner = key.removeprefix("text_tower.text.")
            state[inner if inner in keys else f"text.{inner}"] = value
        elif key in keys:  # logit_scale, logit_bias
            state[key] = value
    return state


def _safetensors(item: LoadedModel, out: Path) -> list[Path]:
    from transferlab.config import dump_recipe

    model = item.encoder.module
    weights = out / WEIGHTS_FILE
    tmp = temp_path(weights)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
    commit(tmp, weights)
    config = {"format": FORMAT, "model": item.recipe.model.model_dump(mode="json"), "recipe": dump_recipe(item.recipe),
              "source": {"model": item.encoder.name, "run": None if item.run_dir is None else str(item.run_dir),
                         "checkpoint": None if item.checkpoint is None else str(item.checkpoint)}}
    atomic_write(out / CONFIG_FILE, json.dumps(config, indent=1))
    return [weights, out / CONFIG_FILE]


USAGE = {
    "openclip": '''import open_clip

model, _, preprocess = open_clip.create_model_and_transforms("local-dir:{out}")
tokenizer = open_clip.get_tokenizer("local-dir:{out}")
# in transferlab: transferlab.load_model("openclip:local-dir:{out}"), transferlab eval openclip:local-dir:{out}''',
    "safetensors": '''from transferlab.models.exported import load_exported

model = load_exported("{out}")  # a transferlab DualEncoder; or transferlab.load_model("{out}") to embed files''',
}


def _card(item: LoadedModel, out: Path, to: str) -> Path:
    recipe = item.recipe
    spec = recipe.model
    results_path = None if item.run_dir is None else Path(item.run_dir) / "eval" / "results.json"
    results = (json.loads(results_path.read_text(encoding="utf-8")) if results_path and results_path.is_file()
               else {"tasks": []})
    results = {**results, "model": out.name or str(out)}
    source = (f"transferlab run {item.run_dir}, checkpoint {item.checkpoint.name}" if item.checkpoint is not None
              else f"transferlab model {item.encoder.name}")  # an export exported again
    facts = {"source": source,
             "format": {"openclip": "open_clip checkpoint", "safetensors": "transferlab safetensors"}[to],
             "image tower": spec.image.name if spec.image else "none",
             "text tower": spec.text.name if spec.text else "none", "embedding dim": spec.embed_dim,
             "objective": recipe.train.objective, "steps": recipe.train.steps, "batch size": recipe.train.batch_size,
             "training data": recipe.train.data_label,
             "preprocessing": f"shorter side resized to {spec.image_size} (bicubic, antialiased), centre crop "
                              f"{spec.image_size}x{spec.image_size}, {spec.channels} channel(s), mean "
                              f"{list(spec.mean)}, std {list(spec.std)}"}
    return write_model_card(out, results, facts, USAGE[to].format(out=out))
