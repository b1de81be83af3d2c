"""Adaptation methods are named in one table (config/catalog.py); the schema, the few-shot task, the adapt
command and the CLI's help all follow it."""

import typing

import pytest
from typer.testing import CliRunner

from transferlab.cli import app
from transferlab.config import EvalSpec
from transferlab.config.catalog import ADAPTATION_METHODS, FEWSHOT_METHODS, ZEROSHOT_START_METHODS, methods_fitted_on
from transferlab.config.schema import FewShotMethod
from transferlab.errors import UserError
from transferlab.evaluate.adaptation import adapt
from transferlab.evaluate.tasks import IMAGE_METHODS, fewshot_estimator


def test_the_schema_accepts_exactly_the_few_shot_methods_of_the_table():
    assert set(typing.get_args(FewShotMethod)) == set(FEWSHOT_METHODS)
    assert set(FEWSHOT_METHODS) == set(methods_fitted_on("features", "fewshot")) | set(IMAGE_METHODS)


@pytest.mark.parametrize("method", methods_fitted_on("features", "fewshot"))
def test_every_feature_level_few_shot_method_has_an_estimator(method):
    assert callable(fewshot_estimator(method, EvalSpec(), None, ["a", "b"]))


def test_methods_that_start_from_zero_shot_are_few_shot_methods_on_features():
    assert set(ZEROSHOT_START_METHODS) <= set(methods_fitted_on("features", "fewshot"))


def test_the_adapt_command_names_every_method_when_given_an_unknown_one(tmp_path):
    with pytest.raises(UserError) as err:
        adapt(["m"], "tip-adapter", "digits", 4, 0, None, tmp_path / "out", None, {})
    assert ", ".join(ADAPTATION_METHODS) in str(err.value)


def test_the_cli_help_lists_every_method():
    result = CliRunner().invoke(app, ["adapt", "--help"], env={"COLUMNS": "400", "TERM": "dumb"})
    assert result.exit_code == 0
    help_text = " ".join(result.output.split())
    assert ", ".join(ADAPTATION_METHODS) in help_text
