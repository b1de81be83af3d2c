"""Every docstring example (`>>>`) in src/transferlab runs and prints what it shows.

The modules with examples are listed in MODULES. A module that gains an example must be added to the list
(the first test fails until it is), and a listed module whose examples vanish fails, so an example can
neither go unrun nor stop running unnoticed. The examples need no network: the Python API's use the
bundled all-MiniLM-L6-v2 and a tiny open_clip configuration (seeded random weights).
"""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest

import transferlab

PACKAGE = Path(transferlab.__file__).parent
# module: the optional package its examples need (None: transferlab's own dependencies suffice)
MODULES = {
    "transferlab": None,
    "transferlab.distributed.gather": None,
    "transferlab.losses.clip": None,
    "transferlab.losses.dcl": None,
    "transferlab.losses.distributed": None,
    "transferlab.losses.look": None,
    "transferlab.losses.siglip": None,
    "transferlab.losses.supcon": None,
    "transferlab.models.api": "open_clip",
}
SLOW = {"transferlab", "transferlab.models.api"}  # they load a model: several seconds each


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_every_module_with_examples_is_listed():
    with_examples = {module_name(path) for path in PACKAGE.rglob("*.py")
                     if any(line.lstrip().startswith(">>>") for line in path.read_text(encoding="utf-8").splitlines())}
    assert with_examples == set(MODULES)


@pytest.mark.parametrize("name", [pytest.param(name, marks=[pytest.mark.slow] if name in SLOW else [])
                                  for name in MODULES])
def test_docstring_examples_run_and_print_what_they_show(name):
    if MODULES[name] is not None:
        pytest.importorskip(MODULES[name])
    module = importlib.import_module(name)
    runner = doctest.DocTestRunner()
    report: list[str] = []
    for test in doctest.DocTestFinder().find(module):
        runner.run(test, out=report.append)
    assert runner.tries > 0, f"{name} has no docstring examples left"
    assert runner.failures == 0, "".join(report)
