"""Reading recipes and suites: YAML in, `base:` inheritance, `--set` overrides, validation with messages.

`load_recipe` reads a built-in recipe by name (`default`) or a YAML file, applies `--set a.b=c`
overrides, resolves relative paths against the working directory and returns a `Recipe`; `load_suite`
does the same for evaluation suites. Validation errors name the full dotted key and, for an unknown key,
the nearest valid one. `dump_recipe` writes the fully resolved recipe that goes into every run directory.
"""

from __future__ import annotations

import typing
from importlib.resources import files
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Union

import yaml
from pydantic import BaseModel, ValidationError

from transferlab.config.schema import (
    PublishedSource,
    Recipe,
    Suite,
    TableSource,
    TextPairSource,
    WebDatasetSource,
)
from transferlab.errors import UserError, did_you_mean


def builtin_recipes() -> list[str]:
    return _builtin(files("transferlab.configs"))


def builtin_suites() -> list[str]:
    return _builtin(files("transferlab.configs") / "suites")


def _builtin(folder) -> list[str]:
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_recipe(ref: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Read a recipe (a YAML path or a built-in name; None is `default`), apply overrides, validate.

    A recipe may start from another with `base: <built-in name or path relative to it>`: its keys are
    merged over the base's, mapping by mapping (lists and values replace).
    """
    raw, origin = _read("default" if ref is None else str(ref), (), "recipe")
    return _finish(raw, origin, overrides)


def load_suite(ref: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Suite:
    """Read an evaluation suite (a YAML path or a built-in suite name), apply overrides, validate."""
    raw, origin = _read(str(ref), (), "suite")
    return suite_from_dict(raw, origin, overrides)


def suite_from_dict(raw: dict, origin: str, overrides: list[str] | tuple[str, ...] = ()) -> Suite:
    """A suite from its raw mapping (`origin` names it in errors), with `key=value` overrides, validated."""
    for override in overrides:
        apply_override(raw, override)
    return resolve_paths(_validate(Suite, raw, origin, "suite"), Path.cwd())


def recipe_from_text(text: str, origin: str, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Parse YAML text (`origin` names it in errors), apply `key=value` overrides, validate."""
    return _finish(parse_yaml(text, origin), origin, overrides)


def _finish(raw: dict, origin: str, overrides: list[str] | tuple[str, ...]) -> Recipe:
    for override in overrides:
        apply_override(raw, override)
    return resolve_paths(validate_recipe(raw, origin), Path.cwd())


def _read(ref: str, chain: tuple[str, ...], kind: str) -> tuple[dict, str]:
    """The raw mapping of a recipe or suite file, merged over its `base:` chain."""
    builtin = builtin_recipes() if kind == "recipe" else builtin_suites()
    path = Path(ref)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise UserError(f"{kind.capitalize()} file {path} does not exist. Pass a YAML {kind} path or one of "
                            f"the built-in {kind}s: {', '.join(builtin)}.")
        text, origin, folder = path.read_text(encoding="utf-8"), str(path), path.parent
    elif ref in builtin:
        folder_of = files("transferlab.configs") if kind == "recipe" else files("transferlab.configs") / "suites"
        text = (folder_of / f"{ref}.yaml").read_text(encoding="utf-8")
        origin, folder = f"built-in {kind} '{ref}'", None
    else:
        raise UserError(f"No {kind} named '{ref}'.{did_you_mean(ref, builtin)} Pass a YAML file "
                        f"path or one of the built-in {kind}s: {', '.join(builtin)}.")
    raw = parse_yaml(text, origin)
    base = raw.pop("base", None)
    if base is None:
        return raw, origin
    if not isinstance(base, str):
        raise UserError(f"{origin}: `base` must name a built-in {kind} or a YAML file, not {base!r}.")
    if base not in builtin and folder is not None and not Path(base).is_absolute():
        base = str(folder / base)
    if origin in chain:
        raise UserError(f"{origin}: `base` {kind}s form a cycle ({' -> '.join(chain + (origin,))}). Remove one.")
    base_raw, _ = _read(base, chain + (origin,), kind)
    return _merge(base_raw, raw), origin


def _merge(base: dict, top: dict) -> dict:
    merged = dict(base)
    for key, value in top.items():
        merged[key] = _merge(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) \
            else value
    return merged


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
    return _validate(Recipe, raw, origin, "recipe")


def _validate(root: type[BaseModel], raw: dict, origin: str, what: str):
    try:
        return root.model_validate(raw)
    except ValidationError as err:
        lines = [_explain(error, root) for error in err.errors()]
        raise UserError(f"{origin} is not a valid {what}: " + "; ".join(lines)
                        + f". Fix the {what} file or the --set override.") from None


def _explain(error: dict, root: type[BaseModel]) -> str:
    loc, kind = error["loc"], error["type"]
    shown = ".".join(_walk(loc, root)[1])
    if kind == "extra_forbidden":
        valid = _fields_at(loc[:-1], root)
        parent = shown.rpartition(".")[0]
        prefix = f"{parent}." if parent else ""
        hint = did_you_mean(prefix + str(loc[-1]), [prefix + key for key in valid])
        return f"unknown key '{shown}'.{hint} Valid keys there: {', '.join(valid)}"
    if kind.startswith("union_tag"):
        expected = error.get("ctx", {}).get("expected_tags", "mnist5k, digits, table, webdataset")
        return f"'{shown}' needs a 'source' of {expected}"
    message = error["msg"].removeprefix("Value error, ")
    return f"'{shown}': {message}" if shown else message


def _walk(loc: tuple, root: type[BaseModel]) -> tuple[list[Any], list[str]]:
    """Follow a pydantic error location through the root model's annotations: the types met, and the path
    as the user wrote it (discriminator tags dropped)."""
    node: Any = root
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
    """The type inside Annotated[...] and Optional[...] (`X | None` locations have no step of their own)."""
    while True:
        origin = typing.get_origin(node)
        members = [m for m in typing.get_args(node) if m is not type(None)]
        if origin is Annotated or (origin in (Union, UnionType) and len(members) == 1):
            node = members[0]
        else:
            return node


def _tags(member: Any) -> tuple:
    field = getattr(member, "model_fields", {}).get("source")
    return typing.get_args(field.annotation) if field else ()


def _fields_at(loc: tuple, root: type[BaseModel]) -> list[str]:
    types, _ = _walk(loc, root)
    node = _unwrap(types[-1] if types else root)
    return list(node.model_fields) if isinstance(node, type) and issubclass(node, BaseModel) else []


def resolve_paths(recipe: Recipe | Suite, base: Path) -> Recipe | Suite:
    """Make data paths absolute so the saved recipe works from any directory."""
    for source in recipe.datasets.values():
        if isinstance(source, TableSource):
            source.table = (base / source.table).resolve()
            source.images = (base / source.images).resolve() if source.images else source.table.parent
        elif isinstance(source, WebDatasetSource) and "://" not in source.shards \
                and not Path(source.shards).is_absolute():  # URLs are absolute
            source.shards = str(base / source.shards)
        elif isinstance(source, TextPairSource) and source.table is not None:
            source.table = (base / source.table).resolve()
        elif isinstance(source, PublishedSource) and ":" not in source.root and not Path(source.root).is_absolute():
            source.root = str((base / source.root).resolve())  # hf-hub:<repo> ids stay as they are
    return recipe


def dump_recipe(recipe: Recipe) -> str:
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
