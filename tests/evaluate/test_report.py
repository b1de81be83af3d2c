"""Tests for the self-contained HTML report."""

from __future__ import annotations

import base64
import io
import math
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from transferlab import fileio
from transferlab.evaluate import report
from transferlab.evaluate.report import write_report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
VOID = {"meta", "img", "br", "hr", "link", "input", "col", "source", "wbr", "area", "base", "embed"}


class TagCollector(HTMLParser):
    """Collects start tags with their attributes and checks that non-void elements nest properly."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.stack: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes {self.stack[-1:]}"
        self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def parse(path: Path) -> TagCollector:
    parser = TagCollector()
    parser.feed(path.read_text(encoding="utf-8"))
    parser.close()
    assert parser.stack == [], f"unclosed tags: {parser.stack}"
    return parser


def results(model: str = "vit-tiny", tasks: list[dict] | None = None) -> dict:
    if tasks is None:
        tasks = [
            {"task": "zeroshot_classification", "dataset": "cifar10", "split": "test",
             "metrics": {"acc1": 0.9731, "acc5": 0.9988, "mean_per_class_recall": 0.97}, "seconds": 3.2},
            {"task": "linear_probe", "dataset": "cifar10", "split": "test",
             "metrics": {"acc1": 0.981, "mean_per_class_recall": 0.9805, "weight_decay": 1.2345e-4},
             "seconds": 11.0},
            {"task": "zeroshot_classification", "dataset": "mnist", "split": "test",
             "metrics": {"acc1": 0.5, "acc5": 0.9, "mean_per_class_recall": 0.49}, "seconds": 1.0},
        ]
    return {"model": model, "suite": "smoke", "created": "2024-05-01T12:00:00+00:00", "tasks": tasks}


METRICS = [
    {"step": 0, "epoch": 0, "loss": 4.1, "lr": 0.0, "logit_scale": 14.3, "samples_per_s": 900.0,
     "seconds": 0.1},
    {"step": 10, "epoch": 0, "loss": 3.2, "lr": 1e-4},
    {"step": 20},  # a line with only a step must not break the plot
    {"step": 30, "epoch": 1, "loss": 2.5, "lr": 5e-5, "seconds": 2.0},
]


def predictions() -> list[dict]:
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 3, size=60)
    y_pred = np.where(rng.random(60) < 0.8, y_true, rng.integers(0, 3, size=60))
    return [
        {"task": "zeroshot_classification", "dataset": "toy", "split": "test",
         "y_true": y_true, "y_pred": y_pred, "classnames": ["cat", "dog & wolf", "<b>bird</b>"]},
        {"task": "linear_probe", "dataset": "toy", "split": "test",
         # invalid TeX between dollars: matplotlib would fail to draw it if it parsed class names as math
         "y_true": [0, 1, 2, 3], "y_pred": [0, 1, 2, 2],
         "classnames": ["$5 bill", r"$\notacommand$", "a", "b"]},
    ]


def images(parser: TagCollector) -> list[bytes]:
    return [base64.b64decode(attrs["src"].split(",", 1)[1], validate=True)
            for tag, attrs in parser.tags if tag == "img"]


def test_full_report_is_self_contained_with_one_png_per_plot(tmp_path):
    path = write_report(tmp_path / "report.html", results(), METRICS, predictions())
    assert path == tmp_path / "report.html" and path.is_file()
    parser = parse(path)
    for _, attrs in parser.tags:
        for key in ("src", "href"):
            if attrs.get(key) is not None:
                assert attrs[key].startswith("data:image/png;base64,"), attrs[key][:80]
    assert not any(tag in ("script", "link", "iframe", "object") for tag, _ in parser.tags)
    assert "url(" not in path.read_text(encoding="utf-8")  # no CSS-loaded fonts or images either
    pngs = images(parser)
    assert len(pngs) == 1 + len(predictions())
    for data in pngs:
        assert data.startswith(PNG_SIGNATURE)
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            assert img.width > 100 and img.height > 100


def test_metric_values_are_formatted(tmp_path):
    path = write_report(tmp_path / "r.html", results())
    cells = [c.strip() for c in parse(path).text]
    for expected in ("97.3%", "99.9%", "97.0%", "98.1%", "50.0%", "0.0001234"):
        assert expected in cells
    assert "0.9731" not in cells
    # one row per dataset/split, with zero-shot and linear-probe side by side
    html_text = path.read_text(encoding="utf-8")
    assert html_text.count("<td>cifar10</td>") == 1 and html_text.count("<td>mnist</td>") == 1


def test_hostile_strings_are_escaped(tmp_path):
    hostile = "<script>alert(1)</script>"
    tasks = [{"task": hostile, "dataset": "a&b", "split": "<i>", "metrics": {hostile: 0.5}, "seconds": 1.0}]
    path = write_report(tmp_path / "r.html", results(model=hostile, tasks=tasks), None, predictions())
    text = path.read_text(encoding="utf-8")
    assert hostile not in text and "<i>" not in text and "<b>bird</b>" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text and "a&amp;b" in text
    parser = parse(path)
    assert not any(tag in ("script", "i", "b") for tag, _ in parser.tags)
    assert hostile in "".join(parser.text)  # shown to the reader as text


def test_nan_metric_shows_a_dash(tmp_path):
    tasks = [{"task": "linear_probe", "dataset": "d", "split": "test",
              "metrics": {"acc1": math.nan, "weight_decay": float("nan"), "loss": 1.5}, "seconds": 1.0}]
    path = write_report(tmp_path / "r.html", results(tasks=tasks))
    cells = [c.strip() for c in parse(path).text]
    assert cells.count("—") == 2 and "1.5" in cells
    assert "nan" not in [c.lower() for c in cells] and "nan%" not in path.read_text(encoding="utf-8")


def test_empty_tasks_and_no_optional_sections(tmp_path):
    path = write_report(tmp_path / "r.html", results(tasks=[]), metrics=None, predictions=None)
    parser = parse(path)
    text = path.read_text(encoding="utf-8")
    assert "no tasks were evaluated" in text.lower()
    assert not any(tag in ("table", "img") for tag, _ in parser.tags)
    assert "Training" not in text and "Confusion" not in text
    # an empty metrics list and an empty predictions list are as good as none
    parser = parse(write_report(tmp_path / "r.html", results(), metrics=[], predictions=[]))
    assert not any(tag == "img" for tag, _ in parser.tags)
    assert sum(tag == "table" for tag, _ in parser.tags) == 1


def test_metrics_only_gives_one_image(tmp_path):
    parser = parse(write_report(tmp_path / "r.html", results(), metrics=METRICS))
    assert len(images(parser)) == 1
    assert any("final loss 2.5 at step 30" in t for t in parser.text)


def test_atomic_write_leaves_no_temp_files_and_keeps_old_report_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "out" / "report.html"  # missing parent directories are created
    write_report(path, results(model="first"))
    write_report(path, results(model="second"), METRICS)
    assert sorted(p.name for p in path.parent.iterdir()) == ["report.html"]
    assert "second" in path.read_text(encoding="utf-8")

    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr(fileio.os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        write_report(path, results(model="third"))
    assert sorted(p.name for p in path.parent.iterdir()) == ["report.html"]
    assert "second" in path.read_text(encoding="utf-8")


def test_confusion_matrix_is_row_normalised_and_annotated_only_when_small():
    fig, accuracy = report._confusion_figure(predictions()[1])
    assert accuracy == 0.75
    ax = fig.axes[0]
    rates = ax.images[0].get_array()
    np.testing.assert_allclose(rates[2], [0, 0, 1, 0])
    np.testing.assert_allclose(rates[3], [0, 0, 1, 0])
    assert sorted(t.get_text() for t in ax.texts) == ["1", "1", "1", "1"]  # 0, 1, 2 right and 3 -> 2
    assert [t.get_text() for t in ax.get_yticklabels()] == ["$5 bill", r"$\notacommand$", "a", "b"]
    assert "75.0%" in ax.get_title()

    n = report.MAX_ANNOTATED_CLASSES + 1
    big = {"task": "t", "dataset": "d", "split": "s", "y_true": list(range(n)), "y_pred": list(range(n)),
           "classnames": [f"c{i}" for i in range(n - 3)]}  # labels past classnames still get rows
    fig, accuracy = report._confusion_figure(big)
    assert accuracy == 1.0 and len(fig.axes[0].texts) == 0
    assert fig.axes[0].images[0].get_array().shape == (n, n)


def test_mismatched_predictions_are_rejected(tmp_path):
    bad = dict(predictions()[1], y_pred=[0, 1])
    with pytest.raises(ValueError, match="equally long"):
        write_report(tmp_path / "r.html", results(), predictions=[bad])
    assert list(tmp_path.iterdir()) == []
