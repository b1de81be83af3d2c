"""Tests for the self-contained HTML report and its figures."""

from __future__ import annotations

import base64
import io
import math
import struct
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from transferlab import fileio
from transferlab.evaluate import plots, report
from transferlab.evaluate.report import write_report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
VOID = {"meta", "img", "br", "hr", "link", "input", "col", "source", "wbr", "area", "base", "embed"}
HOSTILE = "<script>alert(1)</script>"


class TagCollector(HTMLParser):
    """Collects start tags, text and table cells, and checks that non-void elements nest properly."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.stack: list[str] = []
        self.text: list[str] = []
        self.tables: list[list[list[dict]]] = []  # table -> row -> cell {"text", "bold"}

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag not in VOID:
            self.stack.append(tag)
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self.tables[-1][-1].append({"text": "", "bold": False})
        elif tag == "strong":
            self.tables[-1][-1][-1]["bold"] = True

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes {self.stack[-1:]}"
        self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)
        if {"td", "th"} & set(self.stack):
            self.tables[-1][-1][-1]["text"] += data


def parse(path: Path) -> TagCollector:
    """The parsed report, after checking it is well nested and loads nothing from outside itself."""
    text = path.read_text(encoding="utf-8")
    parser = TagCollector()
    parser.feed(text)
    parser.close()
    assert parser.stack == [], f"unclosed tags: {parser.stack}"
    for _, attrs in parser.tags:
        for key in ("src", "href"):
            if attrs.get(key) is not None:
                assert attrs[key].startswith("data:image/png;base64,"), attrs[key][:80]
    assert not any(tag in ("script", "link", "iframe", "object", "a") for tag, _ in parser.tags)
    assert "url(" not in text  # no CSS-loaded fonts or images either
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


def fewshot_task(dataset: str, methods=("linear_probe", "knn"), shots=(1, 2, 4, 8), level: float = 0.3) -> dict:
    metrics = {}
    for i, method in enumerate(methods):
        for k in shots:
            metrics[f"{method}@{k}shot"] = min(1.0, level + 0.1 * math.log2(k) + 0.05 * i)
            metrics[f"{method}@{k}shot_ci95"] = 0.02
    return {"task": "fewshot", "dataset": dataset, "split": "test", "metrics": metrics, "seconds": 2.0}


def one(res: dict, metrics=None, predictions=None, maps=None) -> list[dict]:
    return [{"results": res, "metrics": metrics, "predictions": predictions, "embedding_maps": maps}]


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


def embedding_map(n: int = 60, classes: int = 3, dataset: str = "toy", classnames=None, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    centres = rng.normal(size=(classes, 8)) * 3
    return {"dataset": dataset, "split": "test", "features": centres[labels] + rng.normal(size=(n, 8)),
            "labels": labels, "classnames": classnames or ["$5 bill", "<b>bird</b>", "cat"][:classes]}


def images(parser: TagCollector) -> list[bytes]:
    return [base64.b64decode(attrs["src"].split(",", 1)[1], validate=True)
            for tag, attrs in parser.tags if tag == "img"]


def alts(parser: TagCollector) -> list[str]:
    return [attrs["alt"] for tag, attrs in parser.tags if tag == "img"]


def test_full_report_is_self_contained_with_one_png_per_plot(tmp_path):
    res = results(tasks=[*results()["tasks"], fewshot_task("cifar10"), fewshot_task("mnist")])
    path = write_report(tmp_path / "report.html", one(res, METRICS, predictions(), [embedding_map()]))
    assert path == tmp_path / "report.html" and path.is_file()
    parser = parse(path)
    pngs = images(parser)
    assert len(pngs) == 1 + 2 + len(predictions()) + 1  # training, few-shot per dataset, confusions, map
    sizes = [(int(a["width"]), int(a["height"])) for tag, a in parser.tags if tag == "img"]
    for data, size in zip(pngs, sizes, strict=True):
        assert data.startswith(PNG_SIGNATURE)
        assert struct.unpack(">II", data[16:24]) == size  # the tag's size is the image's
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            assert 100 < img.width <= 1000 and 100 < img.height <= 1000
    # the wide training curve gets a grid row of its own; the rest fit a column unscaled
    assert [a.get("class") for tag, a in parser.tags if tag == "figure"] == ["wide"] + [None] * 5
    assert all(w <= report.COLUMN_PX for w, _ in sizes[1:])
    headings = [t.strip() for t in parser.text]
    for heading in ("Summary", "Training", "Few-shot", "Confusion matrices", "Embedding maps"):
        assert heading in headings
    assert "Comparison" not in headings  # one model: no comparison section


def test_metric_values_are_formatted(tmp_path):
    tasks = [*results()["tasks"], {"task": "retrieval", "dataset": "coco", "split": "test",
                                   "metrics": {"text_retrieval_recall@1": 0.4567, "nmi": 0.81234}}]
    path = write_report(tmp_path / "r.html", one(results(tasks=tasks)))
    cells = [c.strip() for c in parse(path).text]
    for expected in ("97.3%", "99.9%", "97.0%", "98.1%", "50.0%", "0.0001234", "45.7%", "0.8123"):
        assert expected in cells
    assert "0.9731" not in cells
    # one column per dataset/split and one row per task and metric, the task named once per group
    [summary] = parse(path).tables
    assert [c["text"] for c in summary[0]] == ["task", "metric", "cifar10/test", "mnist/test", "coco/test"]
    assert [[c["text"] for c in row] for row in summary[1:4]] == [
        ["zeroshot_classification", "acc1", "97.3%", "50.0%", ""],
        ["acc5", "99.9%", "90.0%", ""],
        ["mean_per_class_recall", "97.0%", "49.0%", ""],
    ]
    assert [c["text"] for c in summary[-1]] == ["nmi", "", "", "0.8123"]


def test_fewshot_metrics_give_one_curve_per_dataset_and_stay_out_of_the_summary(tmp_path):
    extra = dict(fewshot_task("mnist"), metrics={**fewshot_task("mnist")["metrics"], "draws": 5})
    res = results(tasks=[*results()["tasks"], fewshot_task("cifar10"), extra])
    parser = parse(write_report(tmp_path / "r.html", one(res)))
    assert alts(parser) == ["few-shot accuracy on cifar10/test", "few-shot accuracy on mnist/test"]
    [summary] = parser.tables
    assert not any("@" in cell["text"] for row in summary for cell in row)
    # a few-shot metric that is no curve point stays listed
    assert [c["text"] for c in summary[-1]] == ["fewshot", "draws", "", "5"]
    assert len(summary) == 1 + 3 + 3 + 1  # header, zero-shot and linear-probe metrics, draws


def test_fewshot_curves_are_parsed_per_dataset_and_method():
    tasks = [
        {"task": "fewshot", "dataset": "d", "split": "s",
         "metrics": {"knn@cos@4shot": 0.5, "knn@cos@4shot_ci95": 0.1, "knn@cos@1shot": 0.25,
                     "ncm@16shot": 0.75, "ncm@16shot_ci95": None, "acc1@0shot": 0.9, "mean": 0.2}},
        {"task": "linear_probe", "dataset": "d", "split": "s", "metrics": {"probe@4shot": 0.1}},
    ]
    curves = report.fewshot_curves(tasks)
    assert list(curves) == [("d", "s")]
    knn, ncm = curves[("d", "s")]["knn@cos"], curves[("d", "s")]["ncm"]
    assert knn[4] == (0.5, 0.1) and knn[1][0] == 0.25 and math.isnan(knn[1][1])  # no ci95: no band
    assert list(ncm) == [16] and math.isnan(ncm[16][1])
    assert set(curves[("d", "s")]) == {"knn@cos", "ncm"}  # "@0shot" is no shot count
    assert report.in_tables("fewshot", "mean") and report.in_tables("linear_probe", "probe@4shot")
    assert not report.in_tables("fewshot", "ncm@16shot") and not report.in_tables("knn", "acc1_ci95")


def test_fewshot_figure_draws_a_line_and_band_per_method_on_a_log2_axis():
    curve = {k: (0.2 + 0.1 * i, 0.05) for i, k in enumerate((1, 2, 4, 8, 16))}
    curves = {"m": {"linear_probe": curve, "$knn": {1: (0.3, math.nan), 4: (0.5, math.nan)}}}
    fig = plots.fewshot_figure("few-shot · d/s", curves, {"linear_probe": "C0", "$knn": "C1"})
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and len(ax.lines) == 2 and len(ax.collections) == 2
    np.testing.assert_allclose(ax.lines[0].get_ydata(), [20, 30, 40, 50, 60])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "2", "4", "8", "16"]
    [legend] = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == ["linear_probe", "$knn"]
    fig.savefig(io.BytesIO(), format="png")  # "$knn" in the legend must not be parsed as TeX

    both = plots.fewshot_figure("t", {"a": curves["m"], "b": curves["m"]}, {"linear_probe": "C0", "$knn": "C1"})
    ax = both.axes[0]
    assert len(ax.lines) == 4 and len(both.legends) == 2
    assert {line.get_linestyle() for line in ax.lines[:2]} != {line.get_linestyle() for line in ax.lines[2:]}
    assert [t.get_text() for t in both.legends[1].get_texts()] == ["a", "b"]


def test_two_models_get_a_comparison_table_with_the_best_values_in_bold(tmp_path):
    a_tasks = [
        {"task": "linear_probe", "dataset": "d", "split": "test",
         "metrics": {"acc1": 0.8, "loss": 0.5, "weight_decay": 1e-3, "nmi_std": 0.2}},
        {"task": "knn", "dataset": "d", "split": "test", "metrics": {"acc1": 0.7, "k": 10}},
        fewshot_task("d"), fewshot_task("only-a"),
    ]
    b_tasks = [
        {"task": "linear_probe", "dataset": "d", "split": "test",
         "metrics": {"acc1": 0.9, "loss": 0.7, "weight_decay": 1e-4, "nmi_std": 0.1}},
        {"task": "knn", "dataset": "d", "split": "test", "metrics": {"acc1": 0.70004, "k": 20}},
        {"task": "clustering", "dataset": "e", "split": "test", "metrics": {"nmi": 0.4}},
        fewshot_task("d", level=0.4),
    ]
    models = [*one(results("twin", a_tasks), METRICS), *one(results("twin", b_tasks))]
    parser = parse(write_report(tmp_path / "r.html", models))
    comparison = parser.tables[0]
    assert [c["text"] for c in comparison[0]] == ["dataset", "split", "task", "metric", "twin", "twin (2)"]
    rows = {tuple(c["text"] for c in row[:4]): [(c["text"], c["bold"]) for c in row[4:]] for row in comparison[1:]}
    assert rows[("d", "test", "linear_probe", "acc1")] == [("80.0%", False), ("90.0%", True)]
    assert rows[("d", "test", "linear_probe", "loss")] == [("0.5", True), ("0.7", False)]  # lower is better
    assert rows[("d", "test", "knn", "acc1")] == [("70.0%", True), ("70.0%", True)]  # what reads as a tie is one
    for metric in ("weight_decay", "nmi_std"):
        assert not any(bold for _, bold in rows[("d", "test", "linear_probe", metric)])
    assert not any(bold for _, bold in rows[("d", "test", "knn", "k")])
    assert rows[("e", "test", "clustering", "nmi")] == [("", False), ("0.4", False)]  # nothing to beat
    assert not any("shot" in key[3] for key in rows)
    assert len(parser.tables) == 3  # the comparison, then one summary per model
    headings = [t.strip() for t in parser.text]
    assert "Comparison" in headings and "twin" in headings and "twin (2)" in headings
    # combined plot for the shared dataset only, then a's training and two curves, then b's curve
    assert alts(parser) == ["few-shot accuracy on d/test", "training loss and learning rate by step",
                            "few-shot accuracy on d/test", "few-shot accuracy on only-a/test",
                            "few-shot accuracy on d/test"]


@pytest.mark.parametrize("method", ["pca", "tsne"])
def test_embedding_maps_are_drawn_per_map(tmp_path, method):
    maps = [embedding_map(), embedding_map(45, 2, "other", ["x", "y"], seed=1)]
    parser = parse(write_report(tmp_path / "r.html", one(results(), maps=maps), embedding_method=method))
    assert alts(parser) == ["embedding map of toy/test", "embedding map of other/test"]
    name = "t-SNE" if method == "tsne" else "PCA"
    assert f"toy/test: {name} of 60 points in 3 classes" in parser.text
    assert f"other/test: {name} of 45 points in 2 classes" in parser.text


def test_embedding_figure_colours_every_class_and_names_it_in_the_legend():
    emap = embedding_map()
    emap["labels"] = np.where(emap["labels"] == 2, 7, emap["labels"])  # a label past classnames shows its index
    fig, described = plots.embedding_figure(emap, "pca")
    [scatter] = fig.axes[0].collections
    assert scatter.get_offsets().shape == (60, 2) and len(np.unique(scatter.get_facecolors(), axis=0)) == 3
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["$5 bill", "<b>bird</b>", "7"]
    assert described == "PCA of 60 points in 3 classes"
    fig.savefig(io.BytesIO(), format="png")


def test_embedding_map_is_subsampled_deterministically_and_skips_non_finite_rows(monkeypatch):
    monkeypatch.setattr(plots, "MAX_MAP_POINTS", 50)
    emap = embedding_map(121)
    emap["features"][0, 3] = np.nan
    fig, described = plots.embedding_figure(emap, "pca")
    again, _ = plots.embedding_figure(emap, "pca")
    offsets = fig.axes[0].collections[0].get_offsets()
    assert offsets.shape == (50, 2) and np.array_equal(offsets, again.axes[0].collections[0].get_offsets())
    assert described == "PCA of a random 50 of 120 points in 3 classes; left out 1 point with non-finite features"

    many = embedding_map(40, plots.MAX_LEGEND_CLASSES + 1, classnames=[str(i) for i in range(40)])
    fig, described = plots.embedding_figure(many, "pca")
    assert fig.legends == [] and described.endswith("(too many for a colour legend)")


def test_bad_embedding_maps_and_arguments_are_rejected(tmp_path):
    bad = dict(embedding_map(), labels=[0, 1])
    with pytest.raises(ValueError, match="N labels"):
        write_report(tmp_path / "r.html", one(results(), maps=[bad]))
    with pytest.raises(ValueError, match="embedding_method"):
        write_report(tmp_path / "r.html", one(results()), embedding_method="umap")
    with pytest.raises(ValueError, match="at least one model"):
        write_report(tmp_path / "r.html", [])
    assert list(tmp_path.iterdir()) == []


def test_hostile_strings_are_escaped(tmp_path):
    tasks = [{"task": HOSTILE, "dataset": "a&b", "split": "<i>", "metrics": {HOSTILE: 0.5, "x": HOSTILE}},
             fewshot_task("<i>", methods=(f"{HOSTILE}",))]
    maps = [embedding_map(dataset="<i>", classnames=[HOSTILE, "<b>bird</b>", "a&b"])]
    models = [*one(results(model=HOSTILE, tasks=tasks), None, predictions(), maps),
              *one(results(model="<i>", tasks=tasks))]
    path = write_report(tmp_path / "r.html", models)
    text = path.read_text(encoding="utf-8")
    assert HOSTILE not in text and "<i>" not in text and "<b>bird</b>" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text and "a&amp;b" in text
    parser = parse(path)
    assert not any(tag in ("script", "i", "b") for tag, _ in parser.tags)
    assert HOSTILE in "".join(parser.text)  # shown to the reader as text


def test_nan_metric_shows_a_dash(tmp_path):
    tasks = [{"task": "linear_probe", "dataset": "d", "split": "test",
              "metrics": {"acc1": math.nan, "weight_decay": float("nan"), "loss": 1.5}, "seconds": 1.0}]
    path = write_report(tmp_path / "r.html", one(results(tasks=tasks)))
    cells = [c.strip() for c in parse(path).text]
    assert cells.count("—") == 2 and "1.5" in cells
    assert "nan" not in [c.lower() for c in cells] and "nan%" not in path.read_text(encoding="utf-8")


def test_empty_tasks_and_no_optional_sections(tmp_path):
    path = write_report(tmp_path / "r.html", one(results(tasks=[])))
    parser = parse(path)
    text = path.read_text(encoding="utf-8")
    assert "no tasks were evaluated" in text.lower()
    assert not any(tag in ("table", "img") for tag, _ in parser.tags)
    for section in ("Training", "Few-shot", "Confusion", "Embedding"):
        assert section not in text
    # empty lists are as good as none, and so are missing keys
    parser = parse(write_report(tmp_path / "r.html", one(results(), [], [], [])))
    assert not any(tag == "img" for tag, _ in parser.tags)
    assert sum(tag == "table" for tag, _ in parser.tags) == 1
    parser = parse(write_report(tmp_path / "r.html", [{"results": results(tasks=[fewshot_task("d")])}]))
    assert len(images(parser)) == 1 and "Every result is a few-shot curve, drawn below." in parser.text


def test_metrics_only_gives_one_image(tmp_path):
    parser = parse(write_report(tmp_path / "r.html", one(results(), METRICS)))
    assert len(images(parser)) == 1
    assert any("final loss 2.5 at step 30" in t for t in parser.text)


def test_atomic_write_leaves_no_temp_files_and_keeps_old_report_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "out" / "report.html"  # missing parent directories are created
    write_report(path, one(results(model="first")))
    write_report(path, one(results(model="second"), METRICS))
    assert sorted(p.name for p in path.parent.iterdir()) == ["report.html"]
    assert "second" in path.read_text(encoding="utf-8")

    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr(fileio.os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        write_report(path, one(results(model="third")))
    assert sorted(p.name for p in path.parent.iterdir()) == ["report.html"]
    assert "second" in path.read_text(encoding="utf-8")


def test_confusion_matrix_is_row_normalised_and_annotated_only_when_small():
    fig, accuracy = plots.confusion_figure(predictions()[1])
    assert accuracy == 0.75
    ax = fig.axes[0]
    rates = ax.images[0].get_array()
    np.testing.assert_allclose(rates[2], [0, 0, 1, 0])
    np.testing.assert_allclose(rates[3], [0, 0, 1, 0])
    assert sorted(t.get_text() for t in ax.texts) == ["1", "1", "1", "1"]  # 0, 1, 2 right and 3 -> 2
    assert [t.get_text() for t in ax.get_yticklabels()] == ["$5 bill", r"$\notacommand$", "a", "b"]
    assert "75.0%" in ax.get_title()

    n = plots.MAX_ANNOTATED_CLASSES + 1
    big = {"task": "t", "dataset": "d", "split": "s", "y_true": list(range(n)), "y_pred": list(range(n)),
           "classnames": [f"c{i}" for i in range(n - 3)]}  # labels past classnames still get rows
    fig, accuracy = plots.confusion_figure(big)
    assert accuracy == 1.0 and len(fig.axes[0].texts) == 0
    assert fig.axes[0].images[0].get_array().shape == (n, n)


def test_mismatched_predictions_are_rejected(tmp_path):
    bad = dict(predictions()[1], y_pred=[0, 1])
    with pytest.raises(ValueError, match="equally long"):
        write_report(tmp_path / "r.html", one(results(), predictions=[bad]))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("n", [3, 10, 12, 20])
def test_few_shot_methods_never_share_a_colour(n):
    # the adaptation table plots 12 methods; a 10-colour cycle drew zero-shot and full fine-tuning alike
    assert len(set(plots.distinct_colors(n))) == n
