"""DataComp's own evaluation code, imported from a checkout for the tests that compare transferlab's metrics with
it; those tests skip when it is absent.

Set DATACOMP_ROOT to a checkout of mlfoundations/datacomp (its eval_utils/ folder is what is imported) and
install `wilds` (pip install 'transferlab[datacomp-reference]'), which DataComp's WILDS and fairness
evaluators subclass. DataComp's modules also import clip_benchmark at the top for the dataset loading and
zero-shot code that these tests do not call; when clip_benchmark is not installed, empty stand-ins of those
modules are registered so the imports succeed (any call into them would fail loudly).
"""

from __future__ import annotations

import importlib
import os
import sys
import types
from pathlib import Path

import pytest

CLIP_BENCHMARK_MODULES = ("clip_benchmark", "clip_benchmark.datasets", "clip_benchmark.datasets.builder",
                          "clip_benchmark.metrics", "clip_benchmark.metrics.zeroshot_classification",
                          "clip_benchmark.metrics.zeroshot_retrieval")


def datacomp_module(name: str) -> types.ModuleType:
    """`eval_utils.<name>` of the checkout at $DATACOMP_ROOT, or skip the test saying what is missing."""
    root = os.environ.get("DATACOMP_ROOT")
    if not root or not (Path(root) / "eval_utils" / f"{name}.py").is_file():
        pytest.skip("DataComp's eval_utils not found: set DATACOMP_ROOT to a checkout of mlfoundations/datacomp")
    pytest.importorskip("wilds", reason="DataComp's WILDS and fairness evaluators need `wilds` (pip install wilds)")
    try:
        importlib.import_module("clip_benchmark.datasets.builder")
    except ImportError:
        for module in CLIP_BENCHMARK_MODULES:
            stand_in = sys.modules.setdefault(module, types.ModuleType(module))
            stand_in.__path__ = []
        sys.modules["clip_benchmark.datasets.builder"].build_dataset = None
        sys.modules["clip_benchmark.datasets.builder"].image_captions_collate_fn = None
    if root not in sys.path:
        sys.path.insert(0, root)
    return importlib.import_module(f"eval_utils.{name}")
