"""Small charts drawn by hand as inline SVG: log-log lines, a log-log scatter and horizontal bars.

The curation report draws its figures with these rather than with matplotlib, whose import and layout
cost more than a second per report. Only numpy and the standard library are used. Each chart is one
`<svg>` string with width, height and viewBox, a <title> and role="img" with an aria-label, ready to be
placed in an HTML page as is. Every string from the data is escaped with html.escape.

Log axes leave out values that are zero, negative or not finite, are padded by 5% of the decades they
span, always hold at least one power of ten and are ticked at powers of ten (1, 10, 100, 1k, ... 100M, then
10^k). The page stays small: coordinates are rounded to 0.1 px, a line keeps at most MAX_LINE_POINTS
points at log-spaced ranks (so the head and the tail both show), and the scatter draws points that round to
the same position once and keeps at most MAX_SCATTER_POINTS of the distinct ones, evenly spaced through the
input.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

MAX_LINE_POINTS = 1000
MAX_SCATTER_POINTS = 2000
# matplotlib's default colour cycle, "C0" to "C9"
TAB10 = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
         "#17becf")
GREY = "#808080"
DASHES = {"solid": "", "dashed": ' stroke-dasharray="5.5 2.5"', "dotted": ' stroke-dasharray="1.2 2.4"'}
SI = ("1", "10", "100", "1k", "10k", "100k", "1M", "10M", "100M")  # labels of 10^0 .. 10^8
FONT = 'font-family="system-ui, -apple-system, Segoe UI, sans-serif" font-size="11"'
# width, height and the margins around the plot area (left, top, right, bottom) of the log-log charts
SIZE, MARGINS = (560, 400), (62, 30, 14, 44)


@dataclass(frozen=True)
class Line:
    """A named series of (x, y) points, x ascending (a rank, say), drawn as a line."""

    label: str
    x: Sequence[float] | np.ndarray
    y: Sequence[float] | np.ndarray
    color: str = TAB10[0]
    style: str = "solid"  # or "dashed", "dotted"
    width: float = 1.5


@dataclass(frozen=True)
class Area:
    """The plot area in pixels."""

    left: float
    top: float
    width: float
    height: float

    @property
    def right(self) -> float:
        return self.left + self.width

    @property
    def bottom(self) -> float:
        return self.top + self.height


class LogAxis:
    """A log10 axis from data values to pixels, `start` being where its low end is drawn."""

    def __init__(self, values: np.ndarray, start: float, end: float):
        values = _positive(values)
        lo, hi = (math.log10(values.min()), math.log10(values.max())) if values.size else (0.0, 1.0)
        pad = 0.05 * (hi - lo) if hi > lo else 0.5
        lo, hi = lo - pad, hi + pad
        if math.floor(hi) < math.ceil(lo):  # no power of ten inside: widen to the decades around
            lo, hi = math.floor(lo), math.ceil(hi)
        self.lo, self.hi, self.start, self.end = lo, hi, start, end

    def at(self, exponent: float | np.ndarray) -> float | np.ndarray:
        """The pixel of 10**exponent."""
        return self.start + (exponent - self.lo) / (self.hi - self.lo) * (self.end - self.start)

    def __call__(self, values: np.ndarray) -> np.ndarray:
        return self.at(np.log10(values))

    def ticks(self, min_gap: float) -> tuple[list[int], list[float]]:
        """The labelled powers of ten (every one, or every 2nd, 3rd, 5th... so labels are `min_gap` px
        apart), and the unlabelled minor ticks at 2..9 times a power of ten when every decade is labelled and
        there is room for them."""
        per_decade = abs(self.end - self.start) / (self.hi - self.lo)
        steps = (1, 2, 3, 5, 10, 20, 50, 100, 200, 500)
        step = next((s for s in steps if s * per_decade >= min_gap), steps[-1])
        major = [k for k in range(math.ceil(self.lo), math.floor(self.hi) + 1) if k % step == 0]
        minor = []
        if step == 1 and per_decade >= 30:
            minor = [e for k in range(math.floor(self.lo), math.ceil(self.hi)) for m in range(2, 10)
                     if self.lo <= (e := k + math.log10(m)) <= self.hi]
        return major, minor


def tick_label(exponent: int) -> str:
    """The label of 10**exponent, as SVG text content: 1, 10, 100, 1k, ... 100M, else 10 with a superscript."""
    if 0 <= exponent < len(SI):
        return SI[exponent]
    return f'10<tspan dy="-0.5em" font-size="75%">{str(exponent).replace("-", "−")}</tspan>'


def log_spaced(n: int, limit: int = MAX_LINE_POINTS) -> np.ndarray:
    """At most `limit` indices into n points, log-spaced so ranks 1, 2, 3... and the last one are all kept."""
    if n <= limit:
        return np.arange(n)
    return np.unique(np.rint(np.geomspace(1, n, limit)).astype(np.int64)) - 1


def evenly_spaced(n: int, limit: int = MAX_SCATTER_POINTS) -> np.ndarray:
    """At most `limit` evenly spaced indices into n points, the first and last included."""
    return np.arange(n) if n <= limit else np.linspace(0, n - 1, limit).astype(np.int64)


def loglog_lines(lines: Sequence[Line], *, title: str, xlabel: str, ylabel: str,
                 reference: tuple[float, str] | None = None, size: tuple[int, int] = SIZE) -> str:
    """Lines on log-log axes with a legend, and an optional dotted horizontal line at reference[0] that the
    legend names reference[1]."""
    kept = [_loglog_points(line.x, line.y) for line in lines]
    ys = [y for _, y in kept] + ([np.array([reference[0]], dtype=float)] if reference else [])
    area, xaxis, yaxis = _layout(size, [x for x, _ in kept], ys)
    parts, traced, legend = _axes(area, xaxis, yaxis, xlabel, ylabel), [], []
    for line, (x, y) in zip(lines, kept, strict=True):
        index = log_spaced(len(x))
        px, py = _pixels(xaxis(x[index]), yaxis(y[index]))
        parts.append(_polyline(px, py, line.color, line.style, line.width, "line"))
        traced.append(_trace(px, py))
        legend.append((line.label, line.color, line.style, line.width))
    if reference is not None and reference[0] > 0 and math.isfinite(reference[0]):
        y = round(float(yaxis(np.array([reference[0]]))[0]), 1)
        parts.append(_polyline(np.array([area.left, area.right]), np.array([y, y]), GREY, "dotted", 1, "reference"))
        traced.append(_trace(np.array([area.left, area.right]), np.array([y, y])))
        legend.append((reference[1], GREY, "dotted", 1))
    if not any(len(x) for x, _ in kept):
        parts.append(_no_data(area))
    parts.append(_legend(legend, area, traced))
    return _svg(size, title, parts)


def loglog_scatter(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray, *, title: str, xlabel: str,
                   ylabel: str, line: Line | None = None, color: str = TAB10[0],
                   size: tuple[int, int] = SIZE) -> str:
    """Points (x, y) on log-log axes and an optional line named in a legend. Points that fall on the same
    0.1 px are drawn once; of the rest, at most MAX_SCATTER_POINTS evenly spaced through the input."""
    x, y = _loglog_points(x, y)
    lx, ly = _loglog_points(line.x, line.y) if line is not None else (np.empty(0), np.empty(0))
    area, xaxis, yaxis = _layout(size, [x, lx], [y, ly])
    parts = _axes(area, xaxis, yaxis, xlabel, ylabel)
    dots = _distinct(np.rint(xaxis(x) * 10), np.rint(yaxis(y) * 10)) / 10
    if dots.shape[1]:
        path = "".join(f"M{_num(a)} {_num(b)}h0" for a, b in zip(dots[0].tolist(), dots[1].tolist(), strict=True))
        parts.append(f'<path class="points" d="{path}" fill="none" stroke="{_esc(color)}" stroke-opacity="0.6" '
                     f'stroke-width="{3.5 if dots.shape[1] > 1000 else 4.5}" stroke-linecap="round"/>')
    else:
        parts.append(_no_data(area))
    traced = [dots]
    if line is not None:
        index = log_spaced(len(lx))
        lpx, lpy = _pixels(xaxis(lx[index]), yaxis(ly[index]))
        parts.append(_polyline(lpx, lpy, line.color, line.style, line.width, "line"))
        traced.append(_trace(lpx, lpy))
        parts.append(_legend([(line.label, line.color, line.style, line.width)], area, traced))
    return _svg(size, title, parts)


def hbars(labels: Sequence[str], values: Sequence[float], colors: Sequence[str], *, title: str, xlabel: str,
          width: int = 768) -> str:
    """One horizontal bar per label, top to bottom, its label on the left and its value (with thousands
    separators) at its end."""
    names = [_short(str(label), 48) for label in labels]
    values = [float(v) if math.isfinite(v) else 0.0 for v in values]
    texts = [_count(v) for v in values]
    row, left = 28, 14 + max((_text_width(n, 12) for n in names), default=0)
    area = Area(left, 32, width - left - 18, row * max(len(names), 1))
    size = (width, round(area.bottom + 42))
    pad = 10 + max((_text_width(t, 11) for t in texts), default=0)  # room for the value at the longest bar
    top = max([0.0, *values])
    domain = top * area.width / max(area.width - pad, area.width / 4) if top > 0 else 1.0
    step = _nice_step(domain / 5)

    def px(v: float) -> float:
        return round(area.left + max(v, 0.0) / domain * area.width, 1)
    parts = []
    for k in range(int(domain / step + 1e-9) + 1):
        x, tick = px(k * step), _count(k * step, step)
        parts.append(f'<line x1="{_num(x)}" x2="{_num(x)}" y1="{area.top}" y2="{area.bottom + 4}" stroke="#e6e6e6"/>')
        if x + _text_width(tick, 11) / 2 <= width:  # else the label would stick out of the chart
            parts.append(f'<text class="xtick" x="{_num(x)}" y="{area.bottom + 16}" text-anchor="middle">{tick}</text>')
    for i, (name, label, value, text, color) in enumerate(zip(names, labels, values, texts, colors, strict=True)):
        y, end = area.top + row * i, px(value)
        parts.append(f'<rect class="bar" x="{_num(area.left)}" y="{y + 4}" width="{_num(end - area.left)}" '
                     f'height="{row - 8}" fill="{_esc(color)}"><title>{_esc(str(label))}: {text}</title></rect>'
                     f'<text class="ytick" x="{_num(area.left - 8)}" y="{y + row / 2}" dy="0.35em" text-anchor="end" '
                     f'font-size="12">{_esc(name)}</text>'
                     f'<text class="value" x="{_num(end + 4)}" y="{y + row / 2}" dy="0.35em">{text}</text>')
    if not names:
        parts.append(_no_data(area))
    parts.append(f'<path d="M{_num(area.left)} {area.top}V{area.bottom}H{_num(area.right)}" fill="none" '
                 f'stroke="#444"/><text x="{_num(area.left + area.width / 2)}" y="{area.bottom + 34}" '
                 f'text-anchor="middle" font-size="12">{_esc(xlabel)}</text>')
    return _svg(size, title, parts)


# -- the pieces -----------------------------------------------------------------------------------------------


def _esc(text: str) -> str:
    return html.escape(text, quote=True)


def _num(v: float) -> str:
    """A pixel coordinate to 0.1 px, without a trailing .0."""
    text = f"{v:.1f}"
    return text[:-2] if text.endswith(".0") else text


def _text_width(text: str, size: float) -> float:
    """About how wide `text` is at font size `size` in a sans-serif font (generously: it sets margins)."""
    return 0.56 * size * len(text)


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _count(value: float, step: float = 1.0) -> str:
    """A value with thousands separators; with decimals only if it (or the tick step) has a fraction."""
    if value == int(value) and step == int(step):
        return f"{int(value):,}"
    return f"{value:,.{max(0, -math.floor(math.log10(step)))}f}" if step != 1 else f"{value:,.4g}"


def _nice_step(raw: float) -> float:
    """The smallest of 1, 2 or 5 times a power of ten that is at least `raw`."""
    magnitude = 10.0 ** math.floor(math.log10(raw))
    return next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw * (1 - 1e-9))


def _positive(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=float).ravel()
    return values[np.isfinite(values) & (values > 0)]


def _loglog_points(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The points both of whose coordinates can be drawn on log axes."""
    x, y = np.asarray(x, dtype=float).ravel(), np.asarray(y, dtype=float).ravel()
    if x.shape != y.shape:
        raise ValueError(f"x and y differ in length ({len(x)} and {len(y)})")
    shown = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    return x[shown], y[shown]


def _layout(size: tuple[int, int], xs: list[np.ndarray], ys: list[np.ndarray]) -> tuple[Area, LogAxis, LogAxis]:
    left, top, right, bottom = MARGINS
    area = Area(left, top, size[0] - left - right, size[1] - top - bottom)
    xaxis = LogAxis(np.concatenate([np.empty(0), *xs]), area.left, area.right)
    yaxis = LogAxis(np.concatenate([np.empty(0), *ys]), area.bottom, area.top)
    return area, xaxis, yaxis


def _pixels(px: np.ndarray, py: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates rounded to 0.1 px, a point equal to the one before it left out."""
    px, py = np.round(px, 1), np.round(py, 1)
    if len(px) > 1:
        new = np.r_[True, (np.diff(px) != 0) | (np.diff(py) != 0)]
        px, py = px[new], py[new]
    return px, py


def _distinct(px: np.ndarray, py: np.ndarray) -> np.ndarray:
    """The distinct points among whole-number coordinates (2 x n), in the order each first occurs, evenly
    subsampled to MAX_SCATTER_POINTS."""
    if not len(px):
        return np.empty((2, 0))
    keys = px.astype(np.int64) * (1 << 32) + py.astype(np.int64)  # pixels times 10: far below 2**31
    first = np.sort(np.unique(keys, return_index=True)[1])
    first = first[evenly_spaced(len(first))]
    return np.stack([px[first], py[first]])


def _trace(px: np.ndarray, py: np.ndarray, spacing: float = 4.0) -> np.ndarray:
    """Points at most `spacing` px apart along a polyline (2 x n), to tell where a legend would hide it."""
    if len(px) < 2:
        return np.stack([px, py])
    along = np.r_[0, np.cumsum(np.hypot(np.diff(px), np.diff(py)))]
    at = np.linspace(0, along[-1], max(2, int(along[-1] / spacing) + 1))
    return np.stack([np.interp(at, along, px), np.interp(at, along, py)])


def _polyline(px: np.ndarray, py: np.ndarray, color: str, style: str, width: float, cls: str) -> str:
    if not len(px):
        return ""
    path = "M" + " ".join(f"{_num(a)} {_num(b)}" for a, b in zip(px.tolist(), py.tolist(), strict=True))
    if len(px) == 1:  # a single point: a dot the width of the line
        path += "h0"
    return (f'<path class="{cls}" d="{path}" fill="none" stroke="{_esc(color)}" stroke-width="{width}" '
            f'stroke-linejoin="round" stroke-linecap="round"{DASHES.get(style, "")}/>')


def _axes(area: Area, xaxis: LogAxis, yaxis: LogAxis, xlabel: str, ylabel: str) -> list[str]:
    """The frame of the plot area, grid lines and ticks at powers of ten, tick labels and axis labels."""
    parts = []
    major, minor = xaxis.ticks(min_gap=38)
    for k in major:
        x = _num(xaxis.at(k))
        parts.append(f'<line x1="{x}" x2="{x}" y1="{area.top}" y2="{area.bottom}" stroke="#ececec"/>'
                     f'<line x1="{x}" x2="{x}" y1="{area.bottom}" y2="{area.bottom + 4}" stroke="#444"/>'
                     f'<text class="xtick" x="{x}" y="{area.bottom + 16}" text-anchor="middle">{tick_label(k)}</text>')
    ticks = "".join(f"M{_num(xaxis.at(e))} {area.bottom}v2.5" for e in minor)
    major, minor = yaxis.ticks(min_gap=20)
    for k in major:
        y = _num(yaxis.at(k))
        parts.append(f'<line x1="{area.left}" x2="{area.right}" y1="{y}" y2="{y}" stroke="#ececec"/>'
                     f'<line x1="{area.left - 4}" x2="{area.left}" y1="{y}" y2="{y}" stroke="#444"/>'
                     f'<text class="ytick" x="{area.left - 7}" y="{y}" dy="0.35em" text-anchor="end">'
                     f"{tick_label(k)}</text>")
    ticks += "".join(f"M{area.left} {_num(yaxis.at(e))}h-2.5" for e in minor)
    if ticks:
        parts.append(f'<path d="{ticks}" stroke="#444" stroke-width="0.8"/>')
    parts.append(f'<rect class="plot-area" x="{area.left}" y="{area.top}" width="{area.width}" '
                 f'height="{area.height}" fill="none" stroke="#444"/>'
                 f'<text x="{_num(area.left + area.width / 2)}" y="{area.bottom + 34}" text-anchor="middle" '
                 f'font-size="12">{_esc(xlabel)}</text>'
                 f'<text transform="rotate(-90)" x="{_num(-(area.top + area.height / 2))}" y="14" '
                 f'text-anchor="middle" font-size="12">{_esc(ylabel)}</text>')
    return parts


def _legend(entries: list[tuple[str, str, str, float]], area: Area, traced: list[np.ndarray]) -> str:
    """A legend box in the corner of the plot area that hides the fewest of the traced points."""
    if not entries:
        return ""
    row, inset = 16, 8
    width = 40 + max(_text_width(label, 11) for label, *_ in entries)
    height = 8 + row * len(entries)
    points = np.concatenate([np.empty((2, 0)), *traced], axis=1)
    corners = [(area.right - inset - width, area.top + inset), (area.left + inset, area.top + inset),
               (area.left + inset, area.bottom - inset - height), (area.right - inset - width,
                                                                     area.bottom - inset - height)]

    def hidden(corner: tuple[float, float]) -> int:
        x, y = corner
        return int(np.sum((points[0] >= x) & (points[0] <= x + width) & (points[1] >= y) & (points[1] <= y + height)))
    x, y = min(corners, key=hidden)  # the first corner among equals: upper right, upper left, ...
    parts = [f'<g class="legend"><rect x="{_num(x)}" y="{_num(y)}" width="{_num(width)}" height="{height}" rx="3" '
             f'fill="white" fill-opacity="0.85" stroke="#ccc"/>']
    for i, (label, color, style, line_width) in enumerate(entries):
        cy = y + 4 + row * i + row / 2
        parts.append(f'<path d="M{_num(x + 6)} {_num(cy)}h22" stroke="{_esc(color)}" stroke-width="{line_width}"'
                     f'{DASHES.get(style, "")}/><text x="{_num(x + 34)}" y="{_num(cy)}" dy="0.35em">'
                     f"{_esc(label)}</text>")
    return "".join(parts) + "</g>"


def _no_data(area: Area) -> str:
    return (f'<text x="{_num(area.left + area.width / 2)}" y="{_num(area.top + area.height / 2)}" '
            f'text-anchor="middle" fill="#888">no data</text>')


def _svg(size: tuple[int, int], title: str, parts: list[str]) -> str:
    width, height = size
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" aria-label="{_esc(title)}" {FONT}>'
            f"<title>{_esc(title)}</title>"
            f'<text class="title" x="{width / 2}" y="19" text-anchor="middle" font-size="14">{_esc(title)}</text>'
            + "".join(parts) + "</svg>")
