"""Plots of fitted scaling laws: the runs, the fit over and beyond them (dashed where it extrapolates), its
bootstrap band, and held-out runs. matplotlib (Agg), imported on first use."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from transferlab.predict.scaling import (
    DEFAULT_LEVEL,
    ExponentialErrorLaw,
    OvertrainingLaw,
    Prediction,
    ScalingExtrapolationWarning,
    ScalingLaw,
)


def plot_fit(law: ScalingLaw, x: Any, y: ArrayLike, held_out_x: Any = None, held_out_y: ArrayLike | None = None, *,
             path: str | Path, level: float = DEFAULT_LEVEL) -> Path:
    """Draw the runs, the fitted curve over and beyond them (dashed outside the fitted range), its bootstrap band
    and any held-out runs, and write a PNG to `path`.

    `x` is what the law's `predict` takes: x values, losses, or for `OvertrainingLaw` a pair (N, D), drawn
    against compute C = 6·N·D with one curve per token multiplier.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.4, 4.6))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    _draw_curves(axes, law, x, held_out_x, level)
    axes.scatter(_plot_x(law, x), np.asarray(y, dtype=float), color="black", s=18, zorder=3, label="fitted runs")
    if held_out_x is not None and held_out_y is not None:
        axes.scatter(_plot_x(law, held_out_x), np.asarray(held_out_y, dtype=float), color="crimson", marker="*",
                     s=110, zorder=4, label="held-out runs")
    _style_axes(axes, law)
    path = Path(path)
    figure.savefig(path, format="png", dpi=110, bbox_inches="tight")
    return path


def _draw_curves(axes: Any, law: ScalingLaw, x: Any, held_out_x: Any, level: float) -> None:
    for label, grid_x, prediction in _curves(law, x, held_out_x, level):
        line = axes.plot(grid_x, prediction.value, linestyle="--", linewidth=1.5)[0]
        inside = np.where(prediction.extrapolation <= 1.0, prediction.value, np.nan)
        axes.plot(grid_x, inside, color=line.get_color(), linewidth=2.0, label=label)
        axes.fill_between(grid_x, prediction.low, prediction.high, color=line.get_color(), alpha=0.18, linewidth=0)


def _curves(law: ScalingLaw, x: Any, held_out_x: Any, level: float) -> list[tuple[str, np.ndarray, Prediction]]:
    """(label, plotted x, prediction) per curve; extrapolation warnings are expected here and silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ScalingExtrapolationWarning)
        if isinstance(law, OvertrainingLaw):
            return _overtraining_curves(law, x, held_out_x, level)
        grid = _curve_grid(law, np.concatenate([_plot_x(law, x), _plot_x(law, held_out_x)]))
        return [(f"fit ({level:.0%} band)", grid, law.predict(grid, level=level))]


def _overtraining_curves(law: OvertrainingLaw, x: Any, held_out_x: Any, level: float) -> list:
    pairs = [np.asarray(part, dtype=float) for pair in (x, held_out_x) if pair is not None for part in pair]
    N, D = np.concatenate(pairs[0::2]), np.concatenate(pairs[1::2])
    compute = np.geomspace((6 * N * D).min() / 2, (6 * N * D).max() * 4, 200)
    curves = []
    for multiplier in np.unique(np.round(D / N, 6)):
        n = np.sqrt(compute / (6 * multiplier))
        curves.append((f"M = {multiplier:g}", compute, law.predict(n, n * multiplier, level=level)))
    return curves


def _curve_grid(law: ScalingLaw, x: np.ndarray) -> np.ndarray:
    if isinstance(law, ExponentialErrorLaw):
        span = max(float(np.ptp(x)), 1e-3)
        return np.linspace(max(x.min() - 0.15 * span, 1e-6), x.max() + 0.05 * span, 200)
    return np.geomspace(x.min() / 2, x.max() * 10, 200)


def _plot_x(law: ScalingLaw, x: Any) -> np.ndarray:
    if x is None:
        return np.empty(0)
    if isinstance(law, OvertrainingLaw):
        return 6 * np.asarray(x[0], dtype=float) * np.asarray(x[1], dtype=float)
    return np.asarray(x, dtype=float).ravel()


def _style_axes(axes: Any, law: ScalingLaw) -> None:
    if isinstance(law, ExponentialErrorLaw):
        axes.set_xlabel("loss")
        axes.set_ylabel("downstream error")
    else:
        axes.set_xscale("log")
        axes.set_yscale("log")
        axes.set_xlabel("compute C = 6ND" if isinstance(law, OvertrainingLaw) else law.x_name)
        axes.set_ylabel("loss" if isinstance(law, OvertrainingLaw) else law.y_name)
    axes.set_title(f"{law.formula} (dashed: extrapolated)", fontsize=9, parse_math=False)
    axes.grid(True, which="both", alpha=0.25)
    axes.legend(fontsize=8)
