"""Recipe loading, `--set` overrides, validation messages and the dump/load round trip."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import yaml
from hypothesis import example, given, settings
from hypothesis import strategies as st

from transferlab.config import Recipe, Suite, TableSource, apply_override, dump_recipe, load_recipe, validate_recipe
from transferlab.errors import UserError

DEFAULT_YAML = Path(__file__).resolve().parents[1] / "configs" / "default.yaml"


def default_raw() -> dict:
    return yaml.safe_load(DEFAULT_YAML.read_text(encoding="utf-8"))


def error_of(*overrides: str, ref: str | Path | None = None) -> str:
    with pytest.raises(UserError) as info:
        load_recipe(ref, list(overrides))
    return str(info.value)


# ----------------------------------------------------------------------------------------- built-in


def test_default_recipe_matches_default_yaml():
    raw = default_raw()
    recipe = load_recipe()
    assert isinstance(recipe, Recipe)
    assert recipe.train.steps == raw["train"]["steps"]
    assert recipe.train.lr == raw["train"]["lr"]
    assert list(recipe.datasets) == list(raw["datasets"])
    assert recipe.datasets["mnist5k"].templates == raw["datasets"]["mnist5k"]["templates"]
    assert recipe.datasets["digits"].splits.train == raw["datasets"]["digits"]["splits"]["train"]
    assert recipe.model.image.name == raw["model"]["image"]["name"]
    assert recipe.eval.datasets == raw["eval"]["datasets"]
    assert recipe.eval.templates == raw["eval"]["templates"]


def test_none_and_default_name_give_the_same_recipe():
    assert load_recipe(None) == load_recipe("default")


# ---------------------------------------------------------------------------------------- overrides


def test_override_values_are_parsed_as_yaml():
    recipe = load_recipe(None, ["train.steps=7", "train.betas=[0.8,0.9]", "eval.datasets=[digits]",
                                "train.augment.enabled=false", "train.grad_clip=null"])
    assert recipe.train.steps == 7
    assert recipe.train.betas == (0.8, 0.9)
    assert recipe.eval.datasets == ["digits"]
    assert recipe.train.augment.enabled is False
    assert recipe.train.grad_clip is None


def test_override_creates_nested_sections():
    recipe = load_recipe(None, ["datasets.extra.source=digits"])
    assert recipe.datasets["extra"].source == "digits"


def test_override_sets_a_list_item_by_index():
    recipe = load_recipe(None, ["eval.templates.0=x {}"])
    assert recipe.eval.templates == ["x {}"] + default_raw()["eval"]["templates"][1:]


@pytest.mark.parametrize(("override", "expected"), [
    ("train.steps", "key=value"),
    ("=3", "key=value"),
    ("train.steps.x=1", "'train.steps' is a value"),
    ("eval.templates.3=x {}", "not an index"),
    ("eval.templates.a=x {}", "not an index"),
])
def test_malformed_override_is_user_error(override, expected):
    assert expected in error_of(override)


@pytest.mark.parametrize("override", ["eval.templates.0.x=1", "model.mean.0.x.y=1", "eval.templates.²=x {}"])
def test_override_through_scalar_list_item_is_user_error(override):
    raw = default_raw()
    with pytest.raises(UserError):
        apply_override(raw, override)


SEGMENTS = st.sampled_from(["train", "steps", "eval", "templates", "datasets", "mnist5k", "model", "mean",
                            "splits", "0", "1", "7", "x", "", "²"]) | st.text(max_size=4)
VALUES = st.sampled_from(["1", "[1, 2]", "{a: 1}", "null", "x {}", "[", ": :", "'", "!!python/none"]) | st.text(
    max_size=6)


@settings(max_examples=300, deadline=None)
@given(st.lists(SEGMENTS, min_size=1, max_size=5), VALUES)
@example(["eval", "templates", "0", "x"], "1")
def test_override_raises_nothing_but_user_error(segments, value):
    raw = default_raw()
    try:
        apply_override(raw, ".".join(segments) + "=" + value)
    except UserError:
        pass


# --------------------------------------------------------------------------------------- validation


@pytest.mark.parametrize(("override", "key", "suggestion"), [
    ("train.stepz=1", "train.stepz", "train.steps"),
    ("model.image.nam=x", "model.image.nam", "model.image.name"),
    ("datasets.mnist5k.splitz=1", "datasets.mnist5k.splitz", "datasets.mnist5k.splits"),
])
def test_unknown_key_names_full_key_and_closest_valid_key(override, key, suggestion):
    message = error_of(override)
    assert f"unknown key '{key}'" in message
    assert f"Did you mean '{suggestion}'?" in message


def test_unknown_source_lists_valid_sources():
    message = error_of("datasets.mnist5k.source=mnist")
    assert all(tag in message for tag in ("mnist5k", "digits", "table", "webdataset"))


def test_source_folder_is_read_as_table_with_a_warning_naming_the_new_name(caplog):
    """`source: folder`, the name of `source: table` before 0.2, still loads (recipes and suites alike)."""
    with caplog.at_level(logging.WARNING, logger="transferlab.config"):
        recipe = load_recipe(None, ["datasets.mnist5k.source=folder", "datasets.mnist5k.table=pets.csv"])
        suite = Suite(datasets={"pets": {"source": "folder", "table": "pets.csv"}}, eval={"datasets": ["pets"]})
    assert isinstance(recipe.datasets["mnist5k"], TableSource) and recipe.datasets["mnist5k"].source == "table"
    assert isinstance(suite.datasets["pets"], TableSource) and suite.datasets["pets"].table == Path("pets.csv")
    assert "datasets.mnist5k: `source: folder` is now `source: table`" in caplog.text
    assert "datasets.pets: `source: folder` is now `source: table`" in caplog.text


def test_train_data_naming_undefined_dataset_suggests_close_name():
    message = error_of("train.data=digit")
    assert "'digit'" in message
    assert "Did you mean 'digits'?" in message


def test_split_fractions_must_sum_to_one():
    assert "sum to 1" in error_of("datasets.digits.splits.train=0.9")


def test_split_error_names_the_dataset_splits_key():
    assert "'datasets.digits.splits'" in error_of("datasets.digits.splits.train=0.9")


@pytest.mark.parametrize("override", ["eval.templates=[no placeholder]", "datasets.mnist5k.templates=[plain]"])
def test_template_without_placeholder_is_rejected(override):
    assert "has no '{}'" in error_of(override)


def test_low_res_max_below_min_is_rejected():
    assert "low_res_max (3) is below low_res_min (7)" in error_of("train.augment.low_res_max=3")


SMALL_TREES = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | st.floats(-2, 2) | st.sampled_from(["digits", "folder", "a {}"]),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(
        st.sampled_from(["datasets", "digits", "source", "splits", "train", "model", "image", "eval", "x", "0"]),
        children, max_size=3),
    max_leaves=8)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["name", "datasets", "model", "train", "eval", "logging", "x"]),
                       SMALL_TREES, max_size=3))
def test_validate_recipe_raises_nothing_but_user_error(raw):
    try:
        assert isinstance(validate_recipe(raw, "fuzz"), Recipe)
    except UserError as err:
        assert str(err).startswith("fuzz is not a valid recipe")


# ------------------------------------------------------------------------------------------- files


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\ntrain:\n  steps: 3\n   lr: [1\n", encoding="utf-8")
    message = error_of(ref=path)
    assert str(path) in message
    assert "line 4" in message


def test_non_mapping_yaml_is_rejected(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n", encoding="utf-8")
    assert "must hold a mapping" in error_of(ref=path)


def test_missing_file_is_rejected_listing_builtins(tmp_path):
    message = error_of(ref=tmp_path / "nope.yaml")
    assert "does not exist" in message
    assert "default" in message


def test_unknown_builtin_name_suggests_closest():
    assert "Did you mean 'default'?" in error_of(ref="defualt")


def test_dump_then_load_round_trips(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    recipe = load_recipe(None, ["train.steps=9", "train.betas=[0.8,0.9]", "datasets.mine.source=table",
                                "datasets.mine.table=t.csv", "eval.datasets=[mine, digits]"])
    path = tmp_path / "resolved.yaml"
    path.write_text(dump_recipe(recipe), encoding="utf-8")
    assert load_recipe(path) == recipe


def test_relative_folder_table_is_resolved_against_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    recipe = load_recipe(None, ["datasets.mine.source=table", "datasets.mine.table=sub/t.csv"])
    table = recipe.datasets["mine"].table
    assert table.is_absolute()
    assert table == tmp_path.resolve() / "sub" / "t.csv"
    assert recipe.datasets["mine"].images == table.parent


def test_fsdp_with_what_cannot_shard_is_refused_by_name():
    with pytest.raises(UserError, match="fsdp does not work with optimizer adamw8bit, ema_decay"):
        load_recipe(None, ["train.fsdp=true", "train.optimizer=adamw8bit", "train.ema_decay=0.99"])
    assert load_recipe(None, ["train.fsdp=true", "train.optimizer=lion"]).train.fsdp


def test_training_data_in_words_names_a_mixture_with_its_weights():
    assert load_recipe("mixture", []).train.data_label == "mnist5k 0.8 + digits 0.2"
    assert load_recipe(None, []).train.data_label == "mnist5k"
