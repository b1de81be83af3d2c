"""Recipes and suites: the pydantic models (`schema`) and how YAML becomes them (`loading`)."""

from transferlab.config.catalog import IMAGE_ONLY_OBJECTIVES
from transferlab.config.loading import (
    apply_override,
    builtin_recipes,
    builtin_suites,
    dump_recipe,
    load_recipe,
    load_suite,
    parse_yaml,
    recipe_from_text,
    resolve_paths,
    suite_from_dict,
    validate_recipe,
)
from transferlab.config.schema import (
    AugmentSpec,
    BundledSource,
    CifarSource,
    ClipBenchmarkSource,
    DataSource,
    EvalSpec,
    HFDatasetSource,
    ImageFolderSource,
    LoggingSpec,
    ModelSpec,
    PublishedSource,
    Recipe,
    Splits,
    Suite,
    TableSource,
    TextPairSource,
    TowerSpec,
    TrainSpec,
    WebDatasetSource,
    WinoGAViLSource,
)

__all__ = [
    "IMAGE_ONLY_OBJECTIVES", "AugmentSpec", "BundledSource", "CifarSource", "ClipBenchmarkSource", "DataSource",
    "EvalSpec", "TableSource", "HFDatasetSource", "ImageFolderSource", "PublishedSource",
    "LoggingSpec", "ModelSpec", "Recipe", "Splits", "Suite", "TextPairSource", "TowerSpec", "TrainSpec",
    "WebDatasetSource", "WinoGAViLSource", "apply_override",
    "builtin_recipes", "builtin_suites", "dump_recipe", "load_recipe", "load_suite", "parse_yaml",
    "recipe_from_text", "resolve_paths", "suite_from_dict", "validate_recipe",
]
