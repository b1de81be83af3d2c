"""A Markdown model card, `run_dir/README.md`: what the model is and how it scored.

A new card gets a title (with a warning under it when the results come from random weights), a table of
the recipe's facts (image tower, text tower, objective, ...) and the results, which name where the weights
came from (results.json's `provenance.weights`). The results sit between two HTML comments, START and END;
when README.md already exists only that block is rewritten (or appended, when the file has no markers), so
the title, the facts and anything the user wrote or edited stay exactly as they are across re-evaluations.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

from transferlab.errors import UserError
from transferlab.evaluate.report import format_metric
from transferlab.fileio import atomic_write
from transferlab.models.weights import describe, is_random, random_notice, recorded

START = "<!-- transferlab:results:start -->"
END = "<!-- transferlab:results:end -->"

# Characters Markdown would read as markup: table pipes, emphasis, code, links, HTML, entities, math, headings.
_MARKUP = re.compile(r"([\\`*\[\]<>|&$~#])")
# An underscore inside a word is plain text in GitHub Markdown; escaping only the others keeps metric names
# like mean_per_class_recall readable in the raw file.
_EDGE_UNDERSCORE = re.compile(r"(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")


def md(value: object) -> str:
    """`value` as literal Markdown text on one line, safe inside a table cell or a heading."""
    text = " ".join(str(value).split())  # a newline would end the table row
    return _EDGE_UNDERSCORE.sub(r"\\_", _MARKUP.sub(r"\\\1", text))


def _table(head: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def _setting(value: object) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    return str(value)


def _value(task: str, metric: str, metrics: dict) -> str:
    """A metric's value, with its 95% half-width (the `<metric>_ci95` entry) as ± when there is one."""
    text = format_metric(task, metric, metrics[metric])
    half = metrics.get(f"{metric}_ci95")
    if isinstance(half, (int, float)) and not math.isnan(half) and text != "—":
        text += f" ± {format_metric(task, metric, half)}"
    return text


def _results_block(results: dict) -> str:
    """The generated results section, markers included."""
    tasks = results.get("tasks", [])
    rows = []
    for t in tasks:
        task, metrics = str(t["task"]), {str(k): v for k, v in t.get("metrics", {}).items()}
        for metric in metrics:
            if metric.endswith("_ci95") and metric.removesuffix("_ci95") in metrics:
                continue  # shown as the ± of its metric
            rows.append((md(t["dataset"]), md(t["split"]), md(task), md(metric), md(_value(task, metric, metrics))))
        if t.get("skipped"):
            rows.append((md(t["dataset"]), md(t["split"]), md(task), "skipped", md(t["skipped"])))
    meta = (f"Suite {md(results.get('suite', '—'))}, evaluated {md(results.get('created', '—'))}, weights: "
            f"{md(describe(recorded(results)))}. Accuracies and recalls are percentages; ± is the half-width of a "
            f"95% confidence interval.")
    table = _table(("dataset", "split", "task", "metric", "value"), rows) if rows else "No tasks were evaluated."
    return f"{START}\n## Evaluation results\n\n{meta}\n\n{table}\n{END}"


def source_facts(source: dict) -> dict:
    """The facts of a card for a model transferlab did not train (an `Encoder.source`): where it comes from,
    its license where the source states one, and the preprocessing its library publishes for it."""
    facts = {key: source[key] for key in ("library", "architecture", "model", "hub", "class", "pretrained")
             if source.get(key)}
    facts["license"] = source.get("license") or "not stated by the source"
    prep = source.get("preprocessing") or {}
    mean, std = prep.get("mean", prep.get("image_mean")), prep.get("std", prep.get("image_std"))
    parts = [prep["pixels"]] if prep.get("pixels") else [f"{key} {prep[key]}" for key in (
        "size", "do_center_crop", "crop_size", "resample") if key in prep]
    parts += [f"{name} {list(values)}" for name, values in (("mean", mean), ("std", std)) if values is not None]
    if parts:
        facts["preprocessing"] = "; ".join(str(part) for part in parts)
    return facts


def _new_card(results: dict, recipe_summary: dict | None, block: str, usage: str | None = None) -> str:
    trained = recipe_summary is None or "library" not in recipe_summary
    parts = [f"# {md(results.get('model', 'unknown model'))}"]
    if is_random(recorded(results)):
        parts.append(f"> **Random weights.** {md(random_notice(str(results.get('model')), recorded(results)))}")
    parts.append("A model trained and evaluated with transferlab." if trained else
                 "A model evaluated with transferlab.")
    if recipe_summary:
        rows = [(md(key), md(_setting(value))) for key, value in recipe_summary.items()]
        parts += ["## Model", _table(("property", "value"), rows)]
    if usage:
        parts += ["## Loading", f"```python\n{usage.strip()}\n```"]
    return "\n\n".join([*parts, block]) + "\n"


def _replace_block(text: str, block: str, path: Path) -> str:
    start = text.find(START)
    end = text.find(END, start + len(START)) if start >= 0 else -1
    if start < 0 and END not in text:
        return text + ("\n" if text and not text.endswith("\n") else "") + ("\n" if text else "") + block + "\n"
    if start < 0 or end < 0:
        raise UserError(f"{path} has one of the markers {START} and {END} but not the other after it, so the "
                        f"results block to replace is unclear. Remove the stray marker or add the missing one.")
    return text[:start] + block + text[end + len(END):]


def write_model_card(run_dir: Path, results: dict, recipe_summary: dict | None = None,
                     usage: str | None = None) -> Path:
    """Write run_dir/README.md, or update only its results block if it exists; return its path.

    `recipe_summary` is any flat dict of the model's facts (source, license, preprocessing, ...) and `usage`
    Python code that loads the model; they go into a new card only, as the user may have edited that part since.
    """
    path = Path(run_dir) / "README.md"
    block = _results_block(results)
    if path.exists():
        text = _replace_block(path.read_text(encoding="utf-8"), block, path)
    else:
        text = _new_card(results, recipe_summary, block, usage)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, text)
    return path
