"""The figures of the HTML report, and their encoding as inline PNG <img> tags.

Every figure is a bare matplotlib `Figure` rendered through Agg, so no pyplot state is shared between
reports. Text that comes from the user (class names, dataset and model names) is drawn with
parse_math=False: a class called "$5 bill" must show as written, not be parsed (and fail) as TeX.
"""

from __future__ import annotations

import base64
import html
import io
import math
import struct

import numpy as np
from matplotlib import colormaps
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator

DPI = 96
MAX_ANNOTATED_CLASSES = 20  # beyond this the per-cell counts no longer fit in the cells
MAX_LABELLED_CLASSES = 50  # beyond this class names on the axes overlap into a black smear
MAX_LEGEND_CLASSES = 30  # beyond this a map's legend is taller than the map and its colours indistinct
MAX_MAP_POINTS = 2000  # t-SNE time grows quickly with points; 2,000 still show every class's shape
TSNE_PERPLEXITY = 30.0
MODEL_STYLES = [("-", "o"), ("--", "s"), (":", "^"), ("-.", "D"), ((0, (5, 1, 1, 1)), "v"), ((0, (1, 3)), "P")]

Curve = dict[int, tuple[float, float]]  # shots per class -> (mean accuracy, 95% CI half-width), as fractions


def _percent(x: float) -> str:
    return "—" if math.isnan(x) else f"{100 * x:.1f}%"


def _short(name: str, width: int = 24) -> str:
    return name if len(name) <= width else name[: width - 1] + "…"


def inline_png(fig: Figure, alt: str) -> tuple[str, int]:
    """`fig` as an <img> with a PNG data URI, and its width in pixels.

    The tag's width and height are set so the page does not reflow as images decode.
    """
    buffer = io.BytesIO()
    # A tight box: constrained layout lets a title touch the edge once fixed-aspect axes (the confusion
    # matrix) shrink, and the tight box pads every figure alike.
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight", pad_inches=0.08)
    png = buffer.getvalue()
    width, height = struct.unpack(">II", png[16:24])  # the IHDR chunk always comes first
    data = base64.b64encode(png).decode("ascii")
    tag = f'<img src="data:image/png;base64,{data}" width="{width}" height="{height}" alt="{html.escape(alt)}">'
    return tag, width


def series(metrics: list[dict], key: str) -> tuple[list, list]:
    """Steps and values of `key`, skipping the lines that did not log it."""
    points = [(m["step"], m[key]) for m in metrics if m.get(key) is not None]
    return [p[0] for p in points], [p[1] for p in points]


def training_figure(metrics: list[dict]) -> Figure:
    fig = Figure(figsize=(9, 3.4), layout="constrained")
    ax = fig.add_subplot()
    steps, loss = series(metrics, "loss")
    ax.plot(steps, loss, color="C0", lw=1.5)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss", color="C0")  # coloured to match its line, as the lr axis is
    ax.grid(alpha=0.3)
    steps, lr = series(metrics, "lr")
    if lr:
        # The lr spans orders of magnitude less than the loss, so it needs its own axis to be visible.
        lr_ax = ax.twinx()
        lr_ax.plot(steps, lr, color="C1", lw=1, ls="--")
        lr_ax.set_ylabel("learning rate", color="C1")
    return fig


def confusion_figure(pred: dict) -> tuple[Figure, float]:
    """The row-normalised confusion matrix of one prediction set, and its accuracy."""
    y_true = np.asarray(pred["y_true"], dtype=np.int64).ravel()
    y_pred = np.asarray(pred["y_pred"], dtype=np.int64).ravel()
    if y_true.shape != y_pred.shape or (y_true < 0).any() or (y_pred < 0).any():
        raise ValueError("y_true and y_pred must be equally long lists of non-negative class indices")
    names = [str(c) for c in pred["classnames"]]
    n = max(len(names), int(y_true.max(initial=-1)) + 1, int(y_pred.max(initial=-1)) + 1, 1)
    names += [str(i) for i in range(len(names), n)]  # labels beyond classnames still get a row
    counts = np.bincount(y_true * n + y_pred, minlength=n * n).reshape(n, n)
    totals = counts.sum(axis=1, keepdims=True)
    # Row-normalise so a rare class's mistakes are as visible as a common one's; empty rows stay 0.
    rates = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    accuracy = float(np.mean(y_true == y_pred)) if y_true.size else math.nan
    side = min(10.0, max(5.0, 0.3 * n + 3))
    fig = Figure(figsize=(side, side * 0.9), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, shrink=0.8, label="fraction of true class")
    title = f"{pred['task']} · {pred['dataset']}/{pred['split']}\naccuracy {_percent(accuracy)}"
    ax.set_title(title, parse_math=False)
    ax.set(xlabel="predicted", ylabel="true")
    if n <= MAX_LABELLED_CLASSES:
        labels = [_short(c) for c in names]
        size = min(9.0, max(6.0, 220 / n))  # about a cell high, but never below legible
        ax.set_xticks(range(n), labels, rotation=45, ha="right", rotation_mode="anchor", fontsize=size,
                      parse_math=False)
        ax.set_yticks(range(n), labels, fontsize=size, parse_math=False)
    if n <= MAX_ANNOTATED_CLASSES:
        for i, j in zip(*np.nonzero(counts), strict=True):
            ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=8,
                    color="white" if rates[i, j] > 0.5 else "black")
    return fig, accuracy


def _legend(fig: Figure, handles: list, title: str, ncols: int = 1, where: str = "upper") -> None:
    # Outside the axes, so a legend never hides a curve or a cluster; constrained layout makes room for it.
    legend = fig.legend(handles=handles, title=title, loc=f"outside right {where}", fontsize=8, ncols=ncols,
                        title_fontsize=9, frameon=False)
    for text in legend.get_texts():
        text.set_parse_math(False)


def fewshot_figure(title: str, curves: dict[str, dict[str, Curve]], colors: dict[str, str]) -> Figure:
    """Accuracy against shots per class (log2 axis) for model -> method -> curve, with shaded 95% bands.

    Colour tells the method; with several models, line style and marker tell the model.
    """
    fig = Figure(figsize=(6.0, 3.8), layout="constrained")
    ax = fig.add_subplot()
    several = len(curves) > 1
    shots: set[int] = set()
    for methods, (style, marker) in zip(curves.values(), _cycle(MODEL_STYLES, len(curves)), strict=True):
        for method, curve in methods.items():
            ks = sorted(curve)
            mean = np.array([curve[k][0] for k in ks])
            half = np.array([curve[k][1] for k in ks])
            ax.plot(ks, 100 * mean, color=colors[method], ls=style if several else "-",
                    marker=marker if several else "o", ms=4, lw=1.6)
            # A band from a single draw (nan half-width) is left out rather than drawn as zero width.
            ax.fill_between(ks, 100 * np.clip(mean - half, 0, 1), 100 * np.clip(mean + half, 0, 1),
                            color=colors[method], alpha=0.12 if several else 0.2, lw=0)
            shots.update(ks)
    ax.set_xscale("log", base=2)
    # Ticks at the shot counts that were run, written as plain integers instead of powers of two.
    ax.xaxis.set_major_locator(FixedLocator(sorted(shots)))
    ax.xaxis.set_major_formatter(lambda k, _: f"{k:g}")
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set(xlabel="shots per class", ylabel="accuracy (%)")
    ax.set_title(title, parse_math=False)
    ax.grid(alpha=0.3)
    methods = list(dict.fromkeys(m for methods in curves.values() for m in methods))
    _legend(fig, [Line2D([], [], color=colors[m], lw=2, label=_short(m)) for m in methods], "method")
    if several:
        handles = [Line2D([], [], color="0.3", ls=style, marker=marker, ms=4, label=_short(label, 28))
                   for label, (style, marker) in zip(curves, _cycle(MODEL_STYLES, len(curves)), strict=True)]
        _legend(fig, handles, "model", where="lower")  # below the method legend, not over it
    return fig


def _cycle(items: list, n: int) -> list:
    return [items[i % len(items)] for i in range(n)]


def project_2d(features: np.ndarray, method: str) -> np.ndarray:
    """[N, d] features (N >= 2) to [N, 2] map coordinates by PCA or t-SNE, deterministically."""
    # Pad to two columns: both methods need at least as many features as output dimensions.
    features = np.pad(features, ((0, 0), (0, max(0, 2 - features.shape[1]))))
    if method == "tsne":
        from sklearn.manifold import TSNE  # imported here: scikit-learn takes seconds to import

        # Perplexity must stay below the number of points; PCA init and a fixed seed make maps repeatable.
        perplexity = min(TSNE_PERPLEXITY, max((len(features) - 1) / 3, 0.5))
        return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=0).fit_transform(features)
    from sklearn.decomposition import PCA

    return PCA(n_components=2, random_state=0).fit_transform(features)


def distinct_colors(n: int) -> list[str]:
    """n colours as hex, no two alike up to 20: tab10's, then tab20's lighter shades of them."""
    if n <= 10:
        return [to_hex(c) for c in colormaps["tab10"](np.arange(n))]
    if n <= 20:
        shades = colormaps["tab20"](np.arange(20))
        return [to_hex(c) for c in np.concatenate([shades[0::2], shades[1::2]])[:n]]
    return [to_hex(c) for c in colormaps["turbo"](np.linspace(0.05, 0.95, n))]


def _class_colors(n: int) -> np.ndarray:
    if n <= 10:
        return colormaps["tab10"](np.arange(n))
    if n <= 20:
        return colormaps["tab20"](np.arange(n))
    return colormaps["turbo"](np.linspace(0.05, 0.95, n))


def embedding_figure(emap: dict, method: str) -> tuple[Figure, str]:
    """A 2-D scatter of one embedding map coloured by class, and a one-line description of what it shows."""
    features = np.asarray(emap["features"], dtype=np.float64)
    labels = np.asarray(emap["labels"]).ravel()
    if features.ndim != 2 or len(features) != len(labels):
        raise ValueError("an embedding map needs features of shape [N, d] and N labels")
    finite = np.isfinite(features).all(axis=1)
    features, labels = features[finite], labels[finite]
    if len(features) < 2:
        raise ValueError(f"embedding map of {emap['dataset']}/{emap['split']} has fewer than 2 finite points")
    # Subsample in a fixed random order: plotting in that order keeps any one class from covering the rest.
    keep = np.random.default_rng(0).permutation(len(features))[:MAX_MAP_POINTS]
    # L2-normalise: the zero-shot, kNN and clustering tasks compare embeddings by cosine similarity.
    norms = np.linalg.norm(features[keep], axis=1, keepdims=True)
    coords = project_2d(features[keep] / np.where(norms > 0, norms, 1), method)
    classes, codes = np.unique(labels[keep], return_inverse=True)
    names = [str(n) for n in emap["classnames"]]
    # A label outside classnames is shown as its index, as the confusion matrix does.
    names = [names[c] if isinstance(c, (int, np.integer)) and 0 <= c < len(names) else str(c) for c in classes]
    colors = _class_colors(len(classes))
    fig = Figure(figsize=(6.0, 4.4), layout="constrained")
    ax = fig.add_subplot()
    ax.scatter(coords[:, 0], coords[:, 1], c=colors[codes], s=7, alpha=0.75, linewidths=0)
    name = "t-SNE" if method == "tsne" else "PCA"
    ax.set_title(f"{emap['dataset']}/{emap['split']} · {name}", parse_math=False)
    ax.set(xticks=[], yticks=[], xlabel=f"{name} 1", ylabel=f"{name} 2")
    if len(classes) <= MAX_LEGEND_CLASSES:
        handles = [Line2D([], [], ls="", marker="o", ms=6, color=color, label=_short(n))
                   for n, color in zip(names, colors, strict=True)]
        _legend(fig, handles, "class", ncols=1 if len(classes) <= 15 else 2)
    return fig, _describe(name, len(keep), len(features), len(classes), int((~finite).sum()))


def _describe(method: str, shown: int, finite: int, classes: int, dropped: int) -> str:
    points = f"a random {shown:,} of {finite:,} points" if shown < finite else f"{shown:,} points"
    text = f"{method} of {points} in {classes} classes"
    if classes > MAX_LEGEND_CLASSES:
        text += " (too many for a colour legend)"
    if dropped:
        text += f"; left out {dropped} point{'s' if dropped != 1 else ''} with non-finite features"
    return text
