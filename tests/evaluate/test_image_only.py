"""An image backbone (timm, no text tower) on a suite: the tasks that need text are skipped with the reason
in results.json, the report and the model card; everything else runs."""

import json

import pytest
from typer.testing import CliRunner

from tests.evaluate.shapes import write_shapes_suite
from transferlab.cli import app

pytest.importorskip("timm")


@pytest.fixture
def suite(tmp_path):
    return write_shapes_suite(tmp_path, 24, (21, 17), {
        "tasks": ["zeroshot_classification", "ncm", "fewshot", "retrieval"],
        "fewshot": {"shots": [1], "seeds": 1, "methods": ["ncm", "zeroshot", "tip_adapter"]}})


def test_text_tasks_are_skipped_with_the_reason(suite, tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["eval", "timm:resnet10t:random", "--suite", str(suite), "--out", str(out),
                                      "--model-card"])
    assert result.exit_code == 0, result.output
    tasks = {t["task"]: t for t in json.loads((out / "results.json").read_text())["tasks"]}
    assert tasks["zeroshot_classification"]["metrics"] == {} and tasks["retrieval"]["metrics"] == {}
    assert "needs a text encoder; model 'timm:resnet10t:random' has no text encoder" in tasks["retrieval"]["skipped"]
    assert 0 <= tasks["ncm"]["metrics"]["acc1"] <= 1 and "skipped" not in tasks["ncm"]
    assert set(tasks["fewshot"]["metrics"]) == {"ncm@1shot", "ncm@1shot_ci95"}
    assert tasks["fewshot"]["skipped"].startswith("few-shot methods zeroshot, tip_adapter need a text encoder")
    assert "skipped zeroshot_classification on shapes/test" in result.output
    report = (out / "report.html").read_text()
    assert "Skipped:" in report and "zeroshot_classification on shapes/test" in report
    card = (out / "README.md").read_text()  # --model-card: beside the results of a model from elsewhere
    assert "| skipped | zeroshot_classification needs a text encoder" in card
    assert "| library | timm |" in card and "| license | not stated by the source |" in card
    assert "Resize(size=201, interpolation=bicubic" in card and "CenterCrop(size=(176, 176))" in card
