"""The curation report as one self-contained HTML page: a summary, the entry counts before and after
balancing, the pairs each step removed and why, and examples of removed pairs.

The counts plot is the picture of MetaCLIP's balancing: entries sorted by how many pairs match them, on
log-log axes, before and after; the head is cut down to about the cap t and the tail keeps every pair. A
second panel shows each entry's count after against before, with the expected min(c, t). Plots are inline
PNGs (as in the evaluation report) and every string from the data is HTML-escaped.
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from transferlab.curate.reasons import STEP_OF, STEPS
from transferlab.fileio import atomic_write

MAX_SCATTER = 20_000  # entries drawn in the before/after scatter: beyond this the PNG only gets heavier
STEP_COLORS = dict(zip(STEPS, ("C0", "C1", "C2", "C3", "C4", "C5", "C6"), strict=True))


def counts_figure(before: np.ndarray, after: np.ndarray, cap: int) -> Figure:
    fig = Figure(figsize=(11, 4), layout="constrained")
    left, right = fig.subplots(1, 2)
    for counts, label, style in ((before, "before balancing", "-"), (after, "after", "--")):
        ranked = np.sort(counts[counts > 0])[::-1]
        left.plot(np.arange(1, len(ranked) + 1), ranked, style, label=f"{label} ({len(ranked):,} entries)")
    left.axhline(cap, color="grey", lw=0.8, ls=":", label=f"cap t = {cap:,}")
    left.set(xscale="log", yscale="log", xlabel="entry rank", ylabel="pairs matching the entry",
             title="entry counts, sorted")
    left.legend(fontsize=8)
    shown = np.flatnonzero((before > 0) & (after > 0))
    if len(shown) > MAX_SCATTER:
        shown = shown[np.linspace(0, len(shown) - 1, MAX_SCATTER).astype(int)]
    right.scatter(before[shown], after[shown], s=4 if len(shown) > 1000 else 12, alpha=0.5, lw=0)
    if len(shown):
        line = np.geomspace(1, max(before.max(), 1), 200)
        right.plot(line, np.minimum(line, cap), color="C3", lw=1, label="min(c, t)")
        right.legend(fontsize=8)
    right.set(xscale="log", yscale="log", xlabel="pairs before (c)", ylabel="pairs after",
              title="each entry, after vs before")
    return fig


def removed_figure(removed: dict[str, int], kept: int) -> Figure:
    labels, values = [*removed, "kept"], [*removed.values(), kept]
    fig = Figure(figsize=(8, 0.4 * len(labels) + 1.2), layout="constrained")
    ax = fig.add_subplot()
    colors = [STEP_COLORS[STEP_OF[reason]] for reason in removed] + ["0.5"]
    bars = ax.barh(range(len(labels)), values, color=colors)
    ax.bar_label(bars, labels=[f"{v:,}" for v in values], padding=3, fontsize=8)
    ax.set_yticks(range(len(labels)), [f"{STEP_OF.get(r, '')}: {r}" if r != "kept" else r for r in labels],
                  fontsize=9)
    ax.invert_yaxis()
    ax.set(xlabel="pairs", title="pairs removed, by step and reason")
    ax.margins(x=0.15)
    return fig


def _examples(examples: dict[str, list[dict]]) -> str:
    esc, parts = html.escape, []
    for reason, found in examples.items():
        rows = []
        for example in found:
            image = (f'<img src="data:image/png;base64,{example["image"]}" alt="image" width="96" height="96">'
                     if example.get("image") else "")
            rows.append(f"<tr><td>{image}</td><td>{esc(example['caption'])}</td>"
                        f"<td>{esc(', '.join(example['entries']))}</td>"
                        f"<td>{esc(example['shard'])}<br>{esc(example['key'])}</td></tr>")
        parts.append(f"<h3>{esc(STEP_OF[reason])}: {esc(reason)}</h3><div class=\"scroll\"><table><thead><tr>"
                     f"<th>image</th><th>caption</th><th>matched entries</th><th>shard / key</th></tr></thead>"
                     f"<tbody>{''.join(rows)}</tbody></table></div>")
    return "".join(parts) or "<p>No pair was removed.</p>"


def write_page(path: Path, record: dict, before: np.ndarray, after: np.ndarray, cap: int | None,
               examples: dict[str, list[dict]]) -> Path:
    # here, not at the top: the evaluation report pulls in scikit-learn, which shard workers never need
    from transferlab.evaluate.plots import inline_png
    from transferlab.evaluate.report import CSS

    esc = html.escape
    summary = [("pairs read", record["pairs"]), ("pairs kept", record["kept"]),
               *[(f"removed: {step}", n) for step, n in record["removed_by_step"].items()],
               *[(f"tar reader skipped: {reason}", n) for reason, n in record["tar_skips"].items()]]
    meta = record["metadata"]
    if meta is not None:
        summary += [("metadata entries", meta["entries"]), ("blank metadata lines skipped", meta["blank_lines"]),
                    ("duplicate metadata lines skipped", meta["duplicate_lines"]),
                    (f"entries over the cap t = {cap:,}", meta["entries_over_cap"])]
    rows = "".join(f'<tr><td>{esc(name)}</td><td class="num">{value:,}</td></tr>' for name, value in summary)
    body = [f"<h1>Curation of {len(record['pool'])} shards</h1>",
            f'<p class="meta">{esc(record["created"])} · {esc(record["out"])} · fingerprint '
            f'{esc(record["fingerprint"])}</p>', f"<table>{rows}</table>"]
    if record["corrupt_shards"]:
        body.append(f"<p>Corrupt or truncated shards, read up to the damage: "
                    f"{esc(', '.join(record['corrupt_shards']))}</p>")
    if cap is not None and before.any():
        tag, _ = inline_png(counts_figure(before, after, cap), "entry counts before and after balancing")
        body += ["<h2>Entry counts</h2>", f"<figure>{tag}<figcaption>An entry above t after balancing owes the "
                 f"excess to pairs kept by another entry they also match. Entries that match no pair are left out "
                 f"of the log axes: {int((before == 0).sum()):,} before, {int((after == 0).sum()):,} after."
                 f"</figcaption></figure>"]
    tag, _ = inline_png(removed_figure(record["removed"], record["kept"]), "pairs removed per step and reason")
    body += ["<h2>What each step removed</h2>", f"<figure>{tag}</figure>", "<h2>Examples of removed pairs</h2>",
             _examples(examples)]
    document = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>curation report — '
                f"transferlab</title><style>{CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")
    return atomic_write(path, document)
