"""A self-contained HTML report of an evaluation run.

`write_report` turns results.json (plus, optionally, a training run's metrics.jsonl lines and per-task
predictions) into one HTML file: a summary table, the training loss curve and a confusion matrix per
prediction set. Plots are PNGs inlined as data: URIs and the CSS is inline, so the file can be mailed,
attached to an issue or opened offline with nothing next to it.
"""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from transferlab.fileio import atomic_write

MAX_ANNOTATED_CLASSES = 20  # beyond this the per-cell counts no longer fit in the cells
MAX_LABELLED_CLASSES = 50  # beyond this class names on the axes overlap into a black smear

CSS = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #222;
       max-width: 1200px; margin: 2em auto; padding: 0 1em; }
h1 { margin-bottom: .2em; word-break: break-all; }
.meta { color: #666; margin-top: 0; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ddd; padding: .35em .7em; }
th { background: #f4f6f8; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tbody tr:nth-child(even) { background: #fafbfc; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(460px, 1fr)); gap: 1.5em; }
figure { margin: 0; }
img { max-width: 100%; height: auto; }
figcaption { color: #555; font-size: 90%; }
"""


def _fmt(name: str, value: object) -> str:
    """A metric value as text: accuracy-like fractions as percentages, others to 4 significant digits."""
    if value is None:
        return "—"
    try:
        x = float(value)
    except (TypeError, ValueError):
        return str(value)
    if math.isnan(x):
        return "—"
    name = name.lower()
    if name.startswith("acc") or name.endswith(("recall", "accuracy")):
        return f"{100 * x:.1f}%"
    return f"{x:.4g}"


def _summary_table(tasks: list[dict]) -> str:
    """One row per dataset/split and one column per task.metric, so tasks on one dataset sit side by side."""
    columns: dict[str, dict[str, None]] = {}  # task -> metric names, both in first-seen order
    rows: dict[tuple[str, str], dict[tuple[str, str], object]] = {}
    for t in tasks:
        cells = rows.setdefault((str(t["dataset"]), str(t["split"])), {})
        for metric, value in t.get("metrics", {}).items():
            columns.setdefault(str(t["task"]), {})[str(metric)] = None
            cells[(str(t["task"]), str(metric))] = value
    esc = html.escape
    head1 = "".join(f'<th colspan="{len(ms)}">{esc(task)}</th>' for task, ms in columns.items())
    head2 = "".join(f"<th>{esc(m)}</th>" for ms in columns.values() for m in ms)
    body = []
    for (dataset, split), cells in rows.items():
        tds = []
        for task, ms in columns.items():
            for m in ms:
                if (task, m) in cells:  # an absent metric stays blank; a NaN one shows as a dash
                    value = cells[(task, m)]
                    tds.append(f'<td class="num" title="{esc(str(value))}">{esc(_fmt(m, value))}</td>')
                else:
                    tds.append("<td></td>")
        body.append(f"<tr><td>{esc(dataset)}</td><td>{esc(split)}</td>{''.join(tds)}</tr>")
    return (f'<table><thead><tr><th rowspan="2">dataset</th><th rowspan="2">split</th>{head1}</tr>'
            f"<tr>{head2}</tr></thead><tbody>{''.join(body)}</tbody></table>")


def _series(metrics: list[dict], key: str) -> tuple[list, list]:
    """Steps and values of `key`, skipping the lines that did not log it."""
    points = [(m["step"], m[key]) for m in metrics if m.get(key) is not None]
    return [p[0] for p in points], [p[1] for p in points]


def _training_figure(metrics: list[dict]) -> Figure:
    fig = Figure(figsize=(9, 3.6), layout="constrained")
    ax = fig.add_subplot()
    steps, loss = _series(metrics, "loss")
    ax.plot(steps, loss, color="C0", lw=1.5)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss", color="C0")  # coloured to match its line, as the lr axis is
    ax.grid(alpha=0.3)
    steps, lr = _series(metrics, "lr")
    if lr:
        # The lr spans orders of magnitude less than the loss, so it needs its own axis to be visible.
        lr_ax = ax.twinx()
        lr_ax.plot(steps, lr, color="C1", lw=1, ls="--")
        lr_ax.set_ylabel("learning rate", color="C1")
    return fig


def _confusion_figure(pred: dict) -> tuple[Figure, float]:
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
    side = min(12.0, max(5.0, 0.35 * n + 3))
    fig = Figure(figsize=(side, side * 0.9), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, shrink=0.8, label="fraction of true class")
    # parse_math=False everywhere: a class name like "$5 bill" must not be read as TeX.
    title = f"{pred['task']} · {pred['dataset']}/{pred['split']}\naccuracy {_fmt('accuracy', accuracy)}"
    ax.set_title(title, parse_math=False)
    ax.set(xlabel="predicted", ylabel="true")
    if n <= MAX_LABELLED_CLASSES:
        labels = [c if len(c) <= 24 else c[:23] + "…" for c in names]
        size = 9 if n <= 20 else 6
        ax.set_xticks(range(n), labels, rotation=45, ha="right", rotation_mode="anchor", fontsize=size,
                      parse_math=False)
        ax.set_yticks(range(n), labels, fontsize=size, parse_math=False)
    if n <= MAX_ANNOTATED_CLASSES:
        for i, j in zip(*np.nonzero(counts), strict=True):
            ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=8,
                    color="white" if rates[i, j] > 0.5 else "black")
    return fig, accuracy


def _img(fig: Figure, alt: str) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)  # a bare Figure renders PNG through Agg, no pyplot state
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


def write_report(path: Path, results: dict, metrics: list[dict] | None = None,
                 predictions: list[dict] | None = None) -> Path:
    """Write the HTML report of `results` (and of a training run and predictions, if given) to `path`."""
    path = Path(path)
    esc = html.escape
    model, tasks = str(results.get("model", "unknown model")), results.get("tasks", [])
    suite, created = str(results.get("suite", "—")), str(results.get("created", "—"))
    seconds = sum(float(t.get("seconds", 0.0)) for t in tasks)
    parts = [
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{esc(model)} — transferlab report</title><style>{CSS}</style></head><body>",
        f"<h1>{esc(model)}</h1>",
        f'<p class="meta">suite {esc(suite)} · created {esc(created)} · '
        f"{len(tasks)} task{'s' if len(tasks) != 1 else ''} in {seconds:.1f} s</p>",
        "<h2>Summary</h2>",
        _summary_table(tasks) if tasks else "<p>No tasks were evaluated.</p>",
    ]
    if metrics:
        steps, loss = _series(metrics, "loss")
        caption = f"final loss {_fmt('loss', loss[-1])} at step {steps[-1]}" if loss else "no loss was logged"
        if any(m.get("lr") is not None for m in metrics):
            caption += "; dashed: learning rate"
        image = _img(_training_figure(metrics), "training loss and learning rate by step")
        parts += ["<h2>Training</h2>", f"<figure>{image}<figcaption>{esc(caption)}</figcaption></figure>"]
    if predictions:
        parts += ["<h2>Confusion matrices</h2>", '<div class="grid">']
        for pred in predictions:
            fig, accuracy = _confusion_figure(pred)
            label = f"{pred['task']} · {pred['dataset']}/{pred['split']}"
            caption = f"{label}: accuracy {_fmt('accuracy', accuracy)} on {len(pred['y_true'])} samples"
            image = _img(fig, f"confusion matrix of {label}")
            parts.append(f"<figure>{image}<figcaption>{esc(caption)}</figcaption></figure>")
        parts.append("</div>")
    parts.append("</body></html>\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, "\n".join(parts))
    return path
