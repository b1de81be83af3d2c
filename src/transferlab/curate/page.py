"""The curation report as one self-contained HTML page: a summary, the entry counts before and after
balancing, the pairs each step removed and why, and examples of removed pairs.

The counts plot is the picture of MetaCLIP's balancing: entries sorted by how many pairs match them, on
log-log axes, before and after; the head is cut down to about the cap t and the tail keeps every pair. A
second panel shows each entry's count after against before, with the expected min(c, t). Plots are inline
SVG drawn by `svg.py` (no matplotlib: importing it and laying out the axes cost more than a second per
report), and every string from the data is HTML-escaped.
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np

from transferlab.curate import svg
from transferlab.curate.reasons import STEP_OF, STEPS
from transferlab.evaluate.style import CSS
from transferlab.fileio import atomic_write

STEP_COLORS = dict(zip(STEPS, svg.TAB10[: len(STEPS)], strict=True))  # matplotlib's "C0", "C1", ... by step
KEPT_COLOR = svg.GREY
PAGE_CSS = CSS + """
.charts { display: flex; flex-wrap: wrap; gap: .5em 1.5em; }
figure svg { max-width: 100%; height: auto; }
"""


def counts_figure(before: np.ndarray, after: np.ndarray, cap: int) -> str:
    """Two SVG panels: the entries sorted by count before and after balancing, with the cap t, and each
    entry's count after against before, with min(c, t). Entries that match no pair are left out."""
    lines = []
    for counts, label, color, style in ((before, "before balancing", svg.TAB10[0], "solid"),
                                        (after, "after", svg.TAB10[1], "dashed")):
        ranked = np.sort(counts[counts > 0])[::-1]
        lines.append(svg.Line(f"{label} ({len(ranked):,} entries)", np.arange(1, len(ranked) + 1), ranked, color,
                              style))
    left = svg.loglog_lines(lines, title="entry counts, sorted", xlabel="entry rank",
                            ylabel="pairs matching the entry", reference=(cap, f"cap t = {cap:,}"))
    shown = (before > 0) & (after > 0)
    expected = None
    if shown.any():
        top = max(int(before.max()), 1)
        c = np.unique(np.clip([1, cap, top], 1, top))  # min(c, t) is straight on log axes but for its bend at t
        expected = svg.Line("min(c, t)", c, np.minimum(c, cap), svg.TAB10[3], width=1)
    right = svg.loglog_scatter(before[shown], after[shown], title="each entry, after vs before",
                               xlabel="pairs before (c)", ylabel="pairs after", line=expected)
    return f'<div class="charts">{left}{right}</div>'


def removed_figure(removed: dict[str, int], kept: int) -> str:
    """An SVG bar chart of the pairs removed per reason, coloured by step, and the pairs kept."""
    labels = [*(f"{STEP_OF[reason]}: {reason}" for reason in removed), "kept"]
    colors = [*(STEP_COLORS[STEP_OF[reason]] for reason in removed), KEPT_COLOR]
    return svg.hbars(labels, [*removed.values(), kept], colors, title="pairs removed, by step and reason",
                     xlabel="pairs")


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
        body += ["<h2>Entry counts</h2>", f"<figure>{counts_figure(before, after, cap)}<figcaption>An entry "
                 f"above t after balancing owes the excess to pairs kept by another entry they also match. Entries "
                 f"that match no pair are left out of the log axes: {int((before == 0).sum()):,} before, "
                 f"{int((after == 0).sum()):,} after.</figcaption></figure>"]
    body += ["<h2>What each step removed</h2>", f"<figure>{removed_figure(record['removed'], record['kept'])}</figure>",
             "<h2>Examples of removed pairs</h2>", _examples(examples)]
    document = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>curation report — '
                f"transferlab</title><style>{PAGE_CSS}</style></head><body>\n" + "\n".join(body)
                + "\n</body></html>\n")
    return atomic_write(path, document)
