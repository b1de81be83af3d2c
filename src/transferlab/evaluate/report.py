"""A self-contained HTML report of one evaluated model, or a comparison of several.

`write_report` takes, per model, its results.json and optionally its training run's metrics.jsonl lines,
per-task predictions and embedding maps, and writes one HTML file. With several models it opens with a
comparison table (best value per row in bold) and combined few-shot plots; then each model gets a section
with its summary table, training curve, few-shot curves, confusion matrices and embedding maps. Plots are
PNGs inlined as data: URIs and the CSS is inline, so the file can be mailed, attached to an issue or opened
offline with nothing next to it. Every string from the inputs is HTML-escaped. A model whose results come
from random weights (results.json's `provenance.weights`) is named in a warning at the top.
"""

from __future__ import annotations

import html
import math
import re
from pathlib import Path

from matplotlib.figure import Figure

from transferlab.evaluate import plots
from transferlab.evaluate.collections import collection_scores
from transferlab.evaluate.style import CSS
from transferlab.fileio import atomic_write
from transferlab.models.weights import describe, is_random, random_notice, recorded

# "<method>@<k>shot" is a few-shot mean accuracy and "<method>@<k>shot_ci95" its 95% CI half-width.
FEWSHOT_METRIC = re.compile(r"^(?P<method>.+)@(?P<shots>[1-9][0-9]*)shot(?P<ci>_ci95)?$")
# Hyperparameters and spreads sit in the comparison table but are not better when larger or smaller.
UNRANKED = {"weight_decay", "k", "best_k", "n_clusters", "runs"}
EMBEDDING_METHODS = ("pca", "tsne")
# A grid column is ~588 px wide on the 1200 px page; a wider figure gets a row to itself rather than being
# shrunk until its labels are unreadable.
COLUMN_PX = 590

Item = tuple[str, str, bool]  # <img> tag, caption, whether the figure needs a row of its own


def is_fraction(task: str, metric: str) -> bool:
    """Whether a metric is an accuracy or recall in [0, 1], shown as a percentage."""
    name = metric.lower()
    return (name.startswith(("acc", "f1", "jaccard", "avg_jaccard")) or "accuracy" in name or "recall" in name
            or (task == "fewshot" and FEWSHOT_METRIC.match(metric) is not None))


def format_metric(task: str, metric: str, value: object) -> str:
    """A metric value as text: accuracy-like fractions as percentages, others to 4 significant digits."""
    if value is None:
        return "—"
    try:
        x = float(value)
    except (TypeError, ValueError):
        return str(value)
    if math.isnan(x):
        return "—"
    return f"{100 * x:.1f}%" if is_fraction(task, metric) else f"{x:.4g}"


def in_tables(task: str, metric: str) -> bool:
    """Few-shot points and CI half-widths are drawn as curves and bands rather than listed in tables."""
    return not metric.endswith("_ci95") and not (task == "fewshot" and FEWSHOT_METRIC.match(metric))


def fewshot_curves(tasks: list[dict]) -> dict[tuple[str, str], dict[str, plots.Curve]]:
    """(dataset, split) -> method -> shots -> (mean, ci95) from the few-shot task entries."""
    curves: dict[tuple[str, str], dict[str, plots.Curve]] = {}
    for t in tasks:
        if t["task"] != "fewshot":
            continue
        metrics = t.get("metrics", {})
        for name, value in metrics.items():
            match = FEWSHOT_METRIC.match(str(name))
            if match and not match["ci"] and value is not None:
                half = metrics.get(f"{name}_ci95")
                curve = curves.setdefault((str(t["dataset"]), str(t["split"])), {}).setdefault(match["method"], {})
                curve[int(match["shots"])] = (float(value), math.nan if half is None else float(half))
    return curves


def _table(head: list[str], rows: list[str]) -> str:
    # Scrolls sideways on its own when many models or datasets make it wider than the page.
    thead = "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"
    return f'<div class="scroll"><table><thead>{thead}</thead><tbody>{"".join(rows)}</tbody></table></div>'


def _num_cell(task: str, metric: str, value: object, bold: bool = False) -> str:
    text = html.escape(format_metric(task, metric, value))
    text = f"<strong>{text}</strong>" if bold else text
    return f'<td class="num" title="{html.escape(str(value))}">{text}</td>'


def _summary_table(tasks: list[dict]) -> str:
    """One row per task and metric, one column per dataset/split: the full suite has dozens of metrics
    but few datasets, so this shape fits the page where one column per metric would not."""
    columns: dict[tuple[str, str], None] = {}  # (dataset, split), in first-seen order
    rows: dict[str, dict[str, dict[tuple[str, str], object]]] = {}  # task -> metric -> column -> value
    for t in tasks:
        task, column = str(t["task"]), (str(t["dataset"]), str(t["split"]))
        for metric, value in t.get("metrics", {}).items():
            if in_tables(task, str(metric)):
                columns[column] = None
                rows.setdefault(task, {}).setdefault(str(metric), {})[column] = value
    if not rows:
        return "<p>Every result is a few-shot curve, drawn below.</p>"
    esc = html.escape
    body = []
    for task, metrics in rows.items():
        for i, (metric, cells) in enumerate(metrics.items()):
            first = f'<td rowspan="{len(metrics)}">{esc(task)}</td>' if i == 0 else ""
            # An absent metric stays blank; a NaN one shows as a dash.
            tds = "".join(_num_cell(task, metric, cells[c]) if c in cells else "<td></td>" for c in columns)
            group = ' class="group"' if i == 0 else ""  # a rule above each task's rows
            body.append(f"<tr{group}>{first}<td>{esc(metric)}</td>{tds}</tr>")
    return _table(["task", "metric", *(f"{dataset}/{split}" for dataset, split in columns)], body)


def _best(metric: str, values: list[object]) -> float | None:
    """The best of a row's values, or None when the metric is not ranked or fewer than two models have it."""
    name = metric.lower()
    numbers = []
    for v in values:
        try:
            numbers.append(float(v))
        except (TypeError, ValueError):
            continue
    numbers = [x for x in numbers if not math.isnan(x)]
    if name in UNRANKED or name.endswith("_std") or len(numbers) < 2:
        return None
    return min(numbers) if "loss" in name else max(numbers)


def _comparison_table(models: list[dict], labels: list[str]) -> str:
    """Rows (dataset, split, task, metric) over every model's table metrics, one column per model."""
    rows: dict[tuple[str, str, str, str], dict[int, object]] = {}
    for i, model in enumerate(models):
        for t in model["results"].get("tasks", []):
            for metric, value in t.get("metrics", {}).items():
                if in_tables(str(t["task"]), str(metric)):
                    key = (str(t["dataset"]), str(t["split"]), str(t["task"]), str(metric))
                    rows.setdefault(key, {})[i] = value
    if not rows:
        return "<p>No metrics to compare.</p>"
    body = []
    for (dataset, split, task, metric), values in rows.items():
        best = _best(metric, list(values.values()))
        # Values that print the same as the best are bold too: a reader cannot tell them apart.
        shown = None if best is None else format_metric(task, metric, best)
        cells = [_num_cell(task, metric, values[i], format_metric(task, metric, values[i]) == shown)
                 if i in values else "<td></td>" for i in range(len(models))]
        names = "".join(f"<td>{html.escape(s)}</td>" for s in (dataset, split, task, metric))
        body.append(f"<tr>{names}{''.join(cells)}</tr>")
    return _table(["dataset", "split", "task", "metric", *labels], body)


def _item(fig: Figure, alt: str, caption: str) -> Item:
    tag, width = plots.inline_png(fig, alt)
    return tag, caption, width > COLUMN_PX


def _figures(items: list[Item]) -> str:
    """A two-column grid of captioned figures."""
    figures = []
    for img, caption, wide in items:
        tag = '<figure class="wide">' if wide else "<figure>"
        figures.append(f"{tag}{img}<figcaption>{html.escape(caption)}</figcaption></figure>")
    return f'<div class="grid">{"".join(figures)}</div>'


def _fewshot_items(curves: dict[str, dict[tuple[str, str], dict[str, plots.Curve]]], colors: dict[str, str],
                   min_models: int = 1) -> list[Item]:
    """One plot per (dataset, split) that at least `min_models` of model label -> (dataset, split) -> method ->
    curve have."""
    counts: dict[tuple[str, str], int] = {}
    for per_model in curves.values():
        for key in per_model:
            counts[key] = counts.get(key, 0) + 1
    keys = [key for key, count in counts.items() if count >= min_models]
    items = []
    for dataset, split in keys:
        lines = {label: per_model[(dataset, split)] for label, per_model in curves.items()
                 if (dataset, split) in per_model}
        fig = plots.fewshot_figure(f"few-shot · {dataset}/{split}", lines, colors)
        caption = (f"{dataset}/{split}: accuracy by labelled examples per class; "
                   f"bands: 95% confidence interval over random draws")
        items.append(_item(fig, f"few-shot accuracy on {dataset}/{split}", caption))
    return items


def _training(metrics: list[dict]) -> Item:
    steps, loss = plots.series(metrics, "loss")
    caption = f"final loss {format_metric('', 'loss', loss[-1])} at step {steps[-1]}" if loss else "no loss was logged"
    if any(m.get("lr") is not None for m in metrics):
        caption += "; dashed: learning rate"
    return _item(plots.training_figure(metrics), "training loss and learning rate by step", caption)


def _confusion(pred: dict) -> Item:
    fig, accuracy = plots.confusion_figure(pred)
    label = f"{pred['task']} · {pred['dataset']}/{pred['split']}"
    caption = f"{label}: accuracy {format_metric('', 'accuracy', accuracy)} on {len(pred['y_true'])} samples"
    return _item(fig, f"confusion matrix of {label}", caption)


def _embedding(emap: dict, method: str) -> Item:
    fig, described = plots.embedding_figure(emap, method)
    label = f"{emap['dataset']}/{emap['split']}"
    return _item(fig, f"embedding map of {label}", f"{label}: {described}")


def _skipped(tasks: list[dict]) -> list[str]:
    """A list of what was not measured and why (an image backbone has no text tower for zero-shot ...)."""
    items = [f"<li>{html.escape(str(t['task']))} on {html.escape(str(t['dataset']))}/{html.escape(str(t['split']))}: "
             f"{html.escape(str(t['skipped']))}</li>" for t in tasks if t.get("skipped")]
    return [f'<p class="meta">Skipped:</p><ul class="meta">{"".join(items)}</ul>'] if items else []


def _with_code(text: str) -> str:
    """`text` escaped, its `backquoted` parts (commands) as <code>."""
    parts = text.split("`")
    return "".join(f"<code>{html.escape(part)}</code>" if i % 2 else html.escape(part) for i, part in enumerate(parts))


def _collection(results: dict, sub: str) -> list[str]:
    """A named collection's summary: which, how many of its datasets ran, the average of their main metrics
    (one per dataset, listed), and the missing ones with where to get them."""
    c = results.get("collection")
    if not isinstance(c, dict):
        return []
    esc, name, size = html.escape, str(c.get("name", "?")), c.get("size", "?")
    scores = collection_scores(results.get("tasks", []))
    average = format_metric("", "accuracy", c.get("average"))
    whole = len(scores) == size
    head = (f"all {size} datasets ran; their average main metric is <strong>{esc(average)}</strong>, the "
            f"collection's average" if whole else
            f"<strong>{len(scores)} of {esc(str(size))}</strong> datasets ran; the average of their main metrics is "
            f"<strong>{esc(average)}</strong>, over those {len(scores)} only: not the collection's average over all "
            f"{esc(str(size))}, and comparable only with results over the same datasets")
    rows = [f"<tr><td>{esc(dataset)}</td><td>{esc(task)}</td><td>{esc(metric)}</td>{_num_cell(task, metric, value)}"
            f"</tr>" for dataset, (task, metric, value) in scores.items()]
    parts = [f"<{sub}>Collection {esc(name)}</{sub}>", f'<div class="collection"><p>{esc(name)}: {head}.</p>',
             _table(["dataset", "task", "main metric", "value"], rows)]
    missing = c.get("missing") or {}
    if missing:
        items = "".join(f"<li><strong>{esc(str(key))}</strong>: {_with_code(str(why))}</li>"
                        for key, why in missing.items())
        parts.append(f'<details open><summary>{len(missing)} not run, and where to get them</summary>'
                     f'<ul class="missing">{items}</ul></details>')
    return [*parts, "</div>"]


def _model_section(model: dict, label: str, level: int, colors: dict[str, str], method: str) -> list[str]:
    """The heading, meta line and every per-model part; `level` is the heading level of the model's name."""
    esc, sub = html.escape, f"h{level + 1}"
    results = model["results"]
    tasks = results.get("tasks", [])
    seconds = sum(float(t.get("seconds", 0.0)) for t in tasks)
    parts = [f"<h{level}>{esc(label)}</h{level}>", *_random_notice([model], [label]),
             f'<p class="meta">weights: {esc(describe(recorded(results)))}</p>',
             f'<p class="meta">suite {esc(str(results.get("suite", "—")))} · '
             f'created {esc(str(results.get("created", "—")))} · '
             f"{len(tasks)} task{'s' if len(tasks) != 1 else ''} in {seconds:.1f} s</p>",
             *_collection(results, sub), f"<{sub}>Summary</{sub}>",
             _summary_table(tasks) if tasks else "<p>No tasks were evaluated.</p>", *_skipped(tasks)]
    sections = [
        ("Training", [_training(model["metrics"])] if model.get("metrics") else []),
        ("Few-shot", _fewshot_items({label: fewshot_curves(tasks)}, colors)),
        ("Confusion matrices", [_confusion(p) for p in model.get("predictions") or []]),
        ("Embedding maps", [_embedding(e, method) for e in model.get("embedding_maps") or []]),
    ]
    for title, items in sections:
        if items:
            parts += [f"<{sub}>{title}</{sub}>", _figures(items)]
    return parts


def _random_notice(models: list[dict], labels: list[str]) -> list[str]:
    """A warning paragraph naming the models whose results come from random weights (models/weights.py)."""
    notices = [random_notice(label, recorded(model["results"])) for model, label in zip(models, labels, strict=True)
               if is_random(recorded(model["results"]))]
    return [f'<p class="warning">⚠ {html.escape(notice)}</p>' for notice in notices]


def _labels(models: list[dict]) -> list[str]:
    """Model names, numbered where two runs share one, so columns and sections can be told apart."""
    seen: dict[str, int] = {}
    labels = []
    for model in models:
        name = str(model["results"].get("model", "unknown model"))
        seen[name] = seen.get(name, 0) + 1
        labels.append(name if seen[name] == 1 else f"{name} ({seen[name]})")
    return labels


def _method_colors(models: list[dict]) -> dict[str, str]:
    """One colour per few-shot method across the whole report, so a method looks the same in every plot."""
    methods = sorted({m for model in models for curves in fewshot_curves(model["results"].get("tasks", [])).values()
                      for m in curves})
    return dict(zip(methods, plots.distinct_colors(len(methods)), strict=True))


def write_report(path: Path, models: list[dict], embedding_method: str = "pca") -> Path:
    """Write the HTML report of `models` to `path`.

    Each model is {"results": results.json dict, "metrics": metrics.jsonl lines | None, "predictions": list |
    None, "embedding_maps": list | None}; the last three may be left out. One model gives a single-model
    report; several add a comparison first. `embedding_method` is "pca" or "tsne" (slower, fixed seed).
    """
    if embedding_method not in EMBEDDING_METHODS:
        raise ValueError(f"embedding_method must be one of {EMBEDDING_METHODS}, not {embedding_method!r}")
    if not models:
        raise ValueError("write_report needs at least one model")
    path, esc = Path(path), html.escape
    labels, colors = _labels(models), _method_colors(models)
    if len(models) == 1:
        title = labels[0]
        body = _model_section(models[0], labels[0], 1, colors, embedding_method)
    else:
        title = " vs ".join(labels) if len(models) <= 3 else f"{len(models)} models"
        body = [f"<h1>Comparison of {len(models)} models</h1>", *_random_notice(models, labels),
                f'<p class="meta">{" · ".join(esc(label) for label in labels)}</p>',
                "<h2>Comparison</h2>", _comparison_table(models, labels)]
        combined = _fewshot_items({label: fewshot_curves(m["results"].get("tasks", []))
                                   for label, m in zip(labels, models, strict=True)}, colors, min_models=2)
        if combined:
            body += ["<h3>Few-shot, all models</h3>", _figures(combined)]
        for model, label in zip(models, labels, strict=True):
            body += ['<section class="model">', *_model_section(model, label, 2, colors, embedding_method),
                     "</section>"]
    document = "\n".join([
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{esc(title)} — transferlab report</title><style>{CSS}</style></head><body>",
        *body, "</body></html>\n"])
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, document)
    return path
