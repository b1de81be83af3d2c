"""The hand-drawn SVG charts of the curation report: well-formed, points where log axes put them, ticks at
powers of ten, long series thinned, data escaped, and degenerate input drawn rather than raising."""

import math
import re
import subprocess
import sys
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from transferlab.curate import svg
from transferlab.curate.page import STEP_COLORS, counts_figure, removed_figure

NS = "{http://www.w3.org/2000/svg}"
LABELS = dict(title="t", xlabel="x", ylabel="y")


def parse(chart: str) -> ET.Element:
    root = ET.fromstring(chart)
    assert root.tag == f"{NS}svg"
    return root


def text(element: ET.Element) -> str:
    return "".join(element.itertext())


def ticks(root: ET.Element, cls: str, coordinate: str) -> dict[str, float]:
    """Tick label -> its position along the axis, as drawn."""
    return {text(t): float(t.get(coordinate)) for t in root.iter(f"{NS}text") if t.get("class") == cls}


def points(root: ET.Element, cls: str) -> list[np.ndarray]:
    """The (x, y) points of each path of class `cls`."""
    paths = [p.get("d") for p in root.iter(f"{NS}path") if p.get("class") == cls]
    return [np.array([float(v) for v in re.findall(r"-?[0-9.]+", d.replace("h0", ""))]).reshape(-1, 2)
            for d in paths]


def test_a_chart_is_one_svg_element_with_size_title_and_label():
    root = parse(svg.loglog_lines([svg.Line("a", [1, 2, 3], [3, 2, 1])], title="my chart", xlabel="x",
                                  ylabel="y"))
    assert (root.get("width"), root.get("height"), root.get("viewBox")) == ("560", "400", "0 0 560 400")
    assert root.get("role") == "img" and root.get("aria-label") == "my chart"
    assert root.find(f"{NS}title").text == "my chart"


def test_points_sit_where_the_log_axes_put_them():
    # 1, 100 and 10^4 on both axes: 100 lies halfway between the ticks 1 and 10k, on either axis
    root = parse(svg.loglog_lines([svg.Line("a", [1, 100, 1e4], [1e4, 100, 1])], **LABELS))
    xs, ys = ticks(root, "xtick", "x"), ticks(root, "ytick", "y")
    assert list(xs) == list(ys) == ["1", "10", "100", "1k", "10k"]
    assert np.allclose(np.diff(list(xs.values())), (xs["10k"] - xs["1"]) / 4, atol=0.15)
    (line,) = points(root, "line")
    assert np.allclose(line[:, 0], [xs["1"], (xs["1"] + xs["10k"]) / 2, xs["10k"]], atol=0.15)
    assert np.allclose(line[:, 1], [ys["10k"], (ys["1"] + ys["10k"]) / 2, ys["1"]], atol=0.15)
    assert ys["1"] > ys["10k"]  # up is larger
    area = root.find(f"{NS}rect[@class='plot-area']")
    left, top = float(area.get("x")), float(area.get("y"))
    right, bottom = left + float(area.get("width")), top + float(area.get("height"))
    assert left < line[:, 0].min() < line[:, 0].max() < right and top < line[:, 1].min() < line[:, 1].max() < bottom


def test_ticks_are_powers_of_ten_labelled_short_then_with_an_exponent():
    assert [svg.tick_label(k) for k in range(9)] == ["1", "10", "100", "1k", "10k", "100k", "1M", "10M", "100M"]
    root = parse(svg.loglog_scatter([1e-2, 1e11], [1, 1e4], **LABELS))
    labels = [t for t in root.iter(f"{NS}text") if t.get("class") == "xtick"]
    exponents = []
    for label in labels:
        if len(label):  # 10 with a superscript exponent
            assert label.text == "10" and label[0].tag == f"{NS}tspan"
            exponents.append(int(label[0].text.replace("−", "-")))
        else:
            exponents.append(["1", "10", "100", "1k", "10k", "100k", "1M", "10M", "100M"].index(label.text))
    (step,) = set(np.diff(exponents))  # every decade, or every 2nd, 3rd... when crowded
    assert step > 0 and exponents[0] <= -2 < exponents[0] + step and exponents[-1] <= 11 < exponents[-1] + step
    assert any(k < 0 for k in exponents) and any(k > 8 for k in exponents)
    positions = [float(label.get("x")) for label in labels]
    assert np.allclose(np.diff(positions), np.diff(positions)[0], atol=0.15)


def test_long_lines_keep_their_first_and_last_rank_and_at_most_the_limit():
    index = svg.log_spaced(1_000_000)
    assert index[0] == 0 and index[-1] == 999_999 and len(index) <= svg.MAX_LINE_POINTS
    assert (np.diff(index) > 0).all() and list(index[:50]) == list(range(50))  # the head, rank by rank
    n = 10**5
    ranks = np.arange(1, n + 1)
    root = parse(svg.loglog_lines([svg.Line("a", ranks, n / ranks)], **LABELS))
    (line,) = points(root, "line")
    xs, ys = ticks(root, "xtick", "x"), ticks(root, "ytick", "y")
    assert 100 < len(line) <= svg.MAX_LINE_POINTS
    assert np.allclose(line[0], [xs["1"], ys["100k"]], atol=0.15) and np.allclose(line[-1], [xs["100k"], ys["1"]],
                                                                                    atol=0.15)
    assert re.search(r'd="M[^"]*\.[0-9]{2}', svg.loglog_lines([svg.Line("a", ranks, n / ranks)], **LABELS)) is None


def test_the_scatter_draws_at_most_the_limit_and_each_position_once():
    rng = np.random.default_rng(0)
    x = rng.lognormal(3, 2, 50_000)
    root = parse(svg.loglog_scatter(x, x * rng.lognormal(0, 1, x.size), **LABELS))
    (dots,) = points(root, "points")
    assert 1000 < len(dots) <= svg.MAX_SCATTER_POINTS
    root = parse(svg.loglog_scatter(np.full(10_000, 7.0), np.full(10_000, 3.0), **LABELS))
    assert [len(d) for d in points(root, "points")] == [1]


def test_strings_from_the_data_are_escaped():
    evil = '<script>alert("x")</script> & co'
    charts = [svg.loglog_lines([svg.Line(evil, [1, 2], [2, 1])], title=evil, xlabel=evil, ylabel=evil,
                               reference=(1.5, evil)),
              svg.loglog_scatter([1, 2], [2, 1], title=evil, xlabel=evil, ylabel=evil, line=svg.Line(evil, [1], [1])),
              svg.hbars([evil], [3], ['"><script>'], title=evil, xlabel=evil)]
    for chart in charts:
        assert "<script>" not in chart and "&lt;script&gt;" in chart
        root = parse(chart)
        assert root.get("aria-label") == evil and root.find(f"{NS}title").text == evil
        assert sum(text(t) == evil for t in root.iter(f"{NS}text")) >= 2  # the title and a label, as written


@pytest.mark.parametrize("x, y", [([], []), ([5, 5, 5], [7, 7, 7]), ([3], [4]), ([0, 0, 0], [0, 1, 2]),
                                  ([1, 2, 3], [0, 0, 0]), ([1, np.nan, np.inf, -1], [1, 2, 3, 4]),
                                  ([200, 500], [300, 400])])
def test_degenerate_input_is_drawn_with_ticks_at_powers_of_ten(x, y):
    for chart in (svg.loglog_lines([svg.Line("a", x, y), svg.Line("b", [], [], style="dashed")], **LABELS,
                                   reference=(0, "no line at 0")),
                  svg.loglog_scatter(x, y, **LABELS, line=svg.Line("l", x, y))):
        root = parse(chart)
        xs, ys = ticks(root, "xtick", "x"), ticks(root, "ytick", "y")
        assert xs and ys and all(math.isfinite(v) for v in [*xs.values(), *ys.values()])
        drawable = {(a, b) for a, b in zip(x, y, strict=True) if min(a, b) > 0 and math.isfinite(a + b)}
        drawn = {tuple(p) for line in points(root, "line") + points(root, "points") for p in line}
        assert len(drawn) == len(drawable)  # zeros, negatives and NaN left out, repeats drawn once
        assert ("no data" in chart) == (not drawable)


def test_zero_counts_are_left_out_of_the_log_axes():
    root = parse(svg.loglog_lines([svg.Line("a", [1, 2, 3, 4], [0, 10, 0, 1000])], **LABELS))
    (line,) = points(root, "line")
    ys = ticks(root, "ytick", "y")
    assert len(line) == 2 and np.allclose(line[:, 1], [ys["10"], ys["1k"]], atol=0.15)


def test_bars_have_labels_values_with_thousands_separators_and_their_colours():
    root = parse(svg.hbars(["first", "second", "third"], [1_234_567, 2 * 1_234_567, 0], ["#111111", "#222222", "red"],
                           title="t", xlabel="pairs"))
    bars = [b for b in root.iter(f"{NS}rect") if b.get("class") == "bar"]
    assert [b.get("fill") for b in bars] == ["#111111", "#222222", "red"]
    assert [float(b.get("y")) for b in bars] == sorted(float(b.get("y")) for b in bars)  # first on top
    widths = [float(b.get("width")) for b in bars]
    assert widths[2] == 0 and widths[1] == pytest.approx(2 * widths[0], abs=0.2)
    values = [t for t in root.iter(f"{NS}text") if t.get("class") == "value"]
    assert [v.text for v in values] == ["1,234,567", "2,469,134", "0"]
    assert all(float(v.get("x")) > float(b.get("x")) + float(b.get("width")) for v, b in zip(values, bars, strict=True))
    assert [t.text for t in root.iter(f"{NS}text") if t.get("class") == "ytick"] == ["first", "second", "third"]
    assert "1,000,000" in [t.text for t in root.iter(f"{NS}text") if t.get("class") == "xtick"]
    for labels, values in (([], []), (["a"], [0]), (["a", "b"], [0.5, 0.25])):
        parse(svg.hbars(labels, values, ["red"] * len(labels), title="t", xlabel="x"))


def test_the_report_figures_are_svg_in_the_step_colours():
    before, after = np.array([0, 1, 5, 50, 900, 3000]), np.array([0, 1, 5, 50, 500, 520])
    charts = re.findall(r"<svg .*?</svg>", counts_figure(before, after, cap=500), flags=re.S)
    assert len(charts) == 2
    lines = points(parse(charts[0]), "line")
    assert [len(line) for line in lines] == [5, 5]
    legend = [text(t) for t in parse(charts[0]).iter(f"{NS}text") if t.get("class") is None]
    assert {"before balancing (5 entries)", "after (5 entries)", "cap t = 500"} <= set(legend)
    assert len(points(parse(charts[1]), "points")[0]) == 5
    bars = parse(removed_figure({"exact duplicate": 3, "not sampled": 7}, 10))
    fills = [b.get("fill") for b in bars.iter(f"{NS}rect") if b.get("class") == "bar"]
    assert fills == [STEP_COLORS["exact dedup"], STEP_COLORS["balancing"], svg.GREY]
    assert STEP_COLORS["caption"] == "#1f77b4" and STEP_COLORS["balancing"] == "#e377c2"  # C0 and C6


def test_the_curation_report_imports_neither_matplotlib_nor_scikit_learn():
    code = ("import sys, transferlab.curate.report, transferlab.curate.page; "
            "print('matplotlib' in sys.modules, 'sklearn' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "False"]
