"""Where a model's weights come from: weights files read safely, and the record of their origin.

Every loaded model carries one record (`Encoder.weights`), written into results.json as
`provenance.weights`, so that the console, the report, the model card and the leaderboard can say which
numbers belong to trained weights and which to a random initialisation. Its `origin` says what the rest is:

| origin | keys | for |
|---|---|---|
| `pretrained` | `library`, `tag`, `source` (hub repository or URL) | a library's published checkpoint |
| `hub` | `library`, `repo`, `revision` (the snapshot read, when known) | a Hugging Face hub repository |
| `file` | `path`, `sha256` | a weights file |
| `directory` | `path`, `sha256` ({file: hash} of its weight files) | a saved model directory |
| `package` | `package`, `version`, `path` | an installed package shipping a model |
| `checkpoint` | `run`, `checkpoint`, `step`, `sha256` (of model.safetensors) | a transferlab checkpoint |
| `export` | `path`, `sha256`, `run`, `checkpoint` | a `transferlab export --to safetensors` directory |
| `random` | `seed`, `reason` | a seeded random initialisation |

Random weights are only ever asked for: `random` in place of the weights (`openclip:<config>:random`,
`timm:<name>:random`), or an open_clip model-config file, which has no published weights. A reference
that names an architecture and nothing else stops with `not_named`: the library's tags and the way to ask.
"""

from __future__ import annotations

from pathlib import Path

from transferlab.errors import UserError
from transferlab.fileio import sha256_file

RANDOM = "random"
WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")
SHOWN_TAGS = 12  # an architecture with more tags lists the first ones and how to see the rest


def is_weights_file(weights: str) -> bool:
    """Whether the weights part of a reference names a file: a path that exists, or a weights suffix."""
    return Path(weights).exists() or weights.endswith(WEIGHT_SUFFIXES)


def read_weights(path: str | Path) -> dict:
    """A state dict from a .safetensors file, or from a torch file without unpickling arbitrary objects."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise UserError(f"Checkpoint file {path} does not exist. Give the path of a .safetensors file or of a "
                        f"weights-only torch file (.pt, .pth, .bin).")
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


def asks_for_random(weights: str, ref: str) -> bool:
    """Whether the weights part of reference `ref` asks for a random initialisation (`random`)."""
    if weights != RANDOM:
        return False
    if Path(RANDOM).exists():
        raise UserError(f"In {ref}, `{RANDOM}` asks for a random initialisation, but the working directory also "
                        f"holds a file or folder named {RANDOM}. Write ./{RANDOM} for that file, or run from "
                        f"another directory.")
    return True


def named_random(ref: str) -> bool:
    """Whether model reference `ref` itself says its weights are random, before anything loads: `...:random`, or
    an open_clip model-config file with no weights named (`openclip:cfg.json`)."""
    kind, _, spec = ref.partition(":")
    return ref.rpartition(":")[2] == RANDOM or (kind == "openclip" and spec.endswith(".json"))


def not_named(ref: str, library: str, tags: list[str], listing: str, default: str | None = None) -> UserError:
    """The error for a reference `ref` (`openclip:ViT-B-32`) that names an architecture but no weights."""
    if tags:
        shown = [f"{tag} ({library}'s default)" if tag == default else tag for tag in tags[:SHOWN_TAGS]]
        more = f" and {len(tags) - SHOWN_TAGS} more" if len(tags) > SHOWN_TAGS else ""
        published = (f"{library} publishes its pretrained weights under the tags {', '.join(shown)}{more} "
                     f"({listing}): name one, e.g. {ref}:{default or tags[0]}")
    else:
        published = f"{library} publishes no pretrained weights for it ({listing} lists none)"
    return UserError(f"{ref} names an architecture but no weights, and transferlab evaluates a random "
                     f"initialisation only when asked for. {published}. Or give a weights file, {ref}:<file>; or ask "
                     f"for a seeded random initialisation: {ref}:{RANDOM}.")


def random_init(seed: int, reason: str = f"asked for with :{RANDOM}") -> dict:
    return {"origin": "random", "seed": seed, "reason": reason}


def pretrained(library: str, tag: str, source: str | None) -> dict:
    return {"origin": "pretrained", "library": library, "tag": tag, "source": source}


def hub(library: str, repo: str, file: str | Path | None = None) -> dict:
    """A hub repository; its revision is read from the path of a file of its cached snapshot, when given."""
    parts = Path(file).parts if file else ()
    revision = parts[parts.index("snapshots") + 1] if "snapshots" in parts[:-1] else None
    return {"origin": "hub", "library": library, "repo": repo, "revision": revision}


def weights_file(path: str | Path) -> dict:
    return {"origin": "file", "path": str(Path(path).resolve()), "sha256": sha256_file(path)}


def directory(path: str | Path) -> dict:
    """A model directory, with the SHA-256 of each weights file in it (any depth)."""
    path = Path(path)
    files = sorted(p for p in path.rglob("*") if p.suffix in WEIGHT_SUFFIXES and p.is_file())
    return {"origin": "directory", "path": str(path.resolve()),
            "sha256": {str(p.relative_to(path)): sha256_file(p) for p in files}}


def package(name: str, version: str | None, path: str | Path) -> dict:
    return {"origin": "package", "package": name, "version": version, "path": str(path)}


def checkpoint(run_dir: Path | None, path: Path, meta: dict, model_file: str) -> dict:
    return {"origin": "checkpoint", "run": None if run_dir is None else str(Path(run_dir).resolve()),
            "checkpoint": str(Path(path).resolve()),
            "step": meta.get("step"), "sha256": (meta.get("sha256") or {}).get(model_file)}


def export(path: Path, weights: Path, source: dict) -> dict:
    return {"origin": "export", "path": str(Path(path).resolve()), "sha256": sha256_file(weights),
            "run": source.get("run"), "checkpoint": source.get("checkpoint")}


def recorded(results: dict) -> dict | None:
    """The origin record a results.json holds (`provenance.weights`), or None in one written before it did."""
    provenance = results.get("provenance")
    return provenance.get("weights") if isinstance(provenance, dict) else None


def is_random(weights: dict | None) -> bool:
    return isinstance(weights, dict) and weights.get("origin") == "random"


def describe(weights: dict | None) -> str:
    """The origin as a phrase for a card, a report or a console line."""
    weights = weights if isinstance(weights, dict) else {}
    origin = weights.get("origin")
    if origin == "random":
        return f"random initialisation, seed {weights.get('seed')}, {weights.get('reason')}"
    if origin == "pretrained":
        return f"{weights.get('library')} pretrained tag {weights.get('tag')} ({weights.get('source')})"
    if origin == "hub":
        revision = weights.get("revision")
        return f"hub repository {weights.get('repo')}" + (f" at revision {revision}" if revision else "")
    if origin in ("file", "export"):
        what = "file" if origin == "file" else "exported model"
        return f"{what} {weights.get('path')} (SHA-256 {str(weights.get('sha256'))[:16]}…)"
    if origin == "directory":
        return f"directory {weights.get('path')}"
    if origin == "package":
        return f"package {weights.get('package')} {weights.get('version') or ''}".rstrip()
    if origin == "checkpoint":
        return f"checkpoint {weights.get('checkpoint')} (step {weights.get('step')})"
    return "not recorded"


def random_notice(model: str, weights: dict) -> str:
    """One line saying that `model`'s results come from random weights."""
    return (f"{model} has random weights ({describe(weights)}): its results measure an untrained network, not "
            f"a published or trained model.")
