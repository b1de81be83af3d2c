"""The leaderboard as one self-contained HTML page: a table sortable by clicking its headers, a dot plot of
every model's scores and average (inline SVG), and the flags, marked on the headers, rows and cells they
concern and listed with their reasons. CSS and JS are inline and nothing is fetched, like report.html;
every string from the inputs is HTML-escaped.
"""

from __future__ import annotations

import html
import math
from pathlib import Path

from transferlab.evaluate.leaderboard import SHORT_TASKS, Leaderboard, Row, marks, percent
from transferlab.evaluate.report import CSS as REPORT_CSS
from transferlab.fileio import atomic_write

CSS = REPORT_CSS + """
body { max-width: 1600px; }
td.collection { font-size: 85%; white-space: nowrap; }
table.board td:nth-child(2) { min-width: 11em; }
table.board th { cursor: pointer; user-select: none; font-size: 90%; vertical-align: bottom; }
table.board th small { display: block; font-weight: normal; color: #555; }
table.board th[data-dir="asc"]::after { content: " ▲"; } table.board th[data-dir="desc"]::after { content: " ▼"; }
table.board td { font-size: 92%; }
table.board th, table.board td { padding: .3em .45em; }
th.flag, td.flag { background: #fff1dc !important; }
td.mismatch { background: #ffd9b3 !important; outline: 2px solid #e8890c; outline-offset: -2px; }
.warn { color: #a85a00; font-weight: 600; }
.flags { border-left: 4px solid #e8890c; background: #fffaf2; padding: .4em 1em; margin: 1em 0; }
.flags li { margin: .25em 0; word-break: break-word; }
svg text { font: 12px system-ui, sans-serif; fill: #333; }
"""

# Clicking a header sorts by it (again: the other way); blank cells stay last. A cell's data-v is its number.
SCRIPT = """
document.querySelectorAll("table.board th").forEach((th, i) => th.addEventListener("click", () => {
  const body = th.closest("table").tBodies[0], rows = [...body.rows];
  const dir = th.dataset.dir ? (th.dataset.dir === "asc" ? "desc" : "asc") : th.dataset.first;
  th.closest("tr").querySelectorAll("th").forEach(h => delete h.dataset.dir);
  th.dataset.dir = dir;
  const key = r => { const c = r.cells[i]; return c.dataset.v === undefined ? c.textContent
                                                  : c.dataset.v === "" ? null : Number(c.dataset.v); };
  rows.sort((a, b) => { const x = key(a), y = key(b);
    if (x === null || y === null) return (x === null) - (y === null);
    const d = typeof x === "number" ? x - y : x.localeCompare(y); return dir === "asc" ? d : -d; });
  body.append(...rows);
}));
"""


def _th(text: str, sub: str = "", first: str = "desc", flagged: str = "", title: str = "") -> str:
    cls = ' class="flag"' if flagged else ""
    tip = f' title="{html.escape(title)}"' if title else ""
    mark = f' <span class="warn">{html.escape(flagged.strip())}</span>' if flagged else ""
    small = f"<small>{html.escape(sub)}</small>" if sub else ""
    return f'<th data-first="{first}"{cls}{tip}>{html.escape(text)}{mark}{small}</th>'


def _num(value: float | None, text: str | None = None, cls: str = "", title: str = "", bold: bool = False) -> str:
    shown = html.escape(text if text is not None else percent(value))
    shown = f"<strong>{shown}</strong>" if bold else shown
    tip = f' title="{html.escape(title)}"' if title else ""
    data = "" if value is None else repr(float(value))
    return f'<td class="num {cls}" data-v="{data}"{tip}>{shown}</td>'


def _collection(row: Row) -> str:
    c = row.results.get("collection")
    if not row.collection or not isinstance(c, dict):
        return '<td data-v=""></td>'
    average = c.get("average")
    value = float(average) if isinstance(average, int | float) and math.isfinite(average) else None
    return (f'<td class="collection" data-v="{"" if value is None else value!r}" title="{html.escape(row.collection)}">'
            f'{html.escape(str(c.get("name", "?")))} <strong>{percent(value) or "—"}</strong><br>'
            f'<small>{html.escape(str(c.get("ran", "?")))} of {html.escape(str(c.get("size", "?")))} datasets</small>'
            "</td>")


def _table(board: Leaderboard) -> str:
    has_collection = any(r.collection for r in board.rows)
    over = "all columns" if len(board.shared) == len(board.columns) else f"{len(board.shared)} shared columns"
    head = [_th("#", first="asc"), _th("model", first="asc"), _th("average", f"% over {over}"),
            _th("columns", "of " + str(len(board.columns))), _th("avg rank", "1 is best", first="asc")]
    if has_collection:
        head.append(_th("collection", first="asc"))
    for column in board.columns:
        flags = board.column_flags(column.name)
        head.append(_th(column.dataset, SHORT_TASKS.get(column.task, column.task) + " · " + "/".join(column.metrics),
                        flagged=marks(flags), title="\n".join(f.message for f in flags) or column.name))
    best = {c.name: max((r.values[c.name] for r in board.rows if r.values.get(c.name) is not None), default=None)
            for c in board.columns}
    body = []
    for position, row in enumerate(board.rows, 1):
        flags = board.row_flags(row.label)
        label = (f'<td class="flag" title="{html.escape(chr(10).join(f.message for f in flags))}">'
                 f'{html.escape(row.label)} <span class="warn">{html.escape(marks(flags).strip())}</span></td>'
                 if flags else f'<td title="{html.escape(str(row.path))}">{html.escape(row.label)}</td>')
        top = position == 1 and board.sort == "average"
        average = _num(row.average, bold=top) if row.average is not None else \
            _num(None, "—", title=f"not comparable: {board.comparison}")
        cells = [_num(position, str(position)), label, average,
                 _num(row.count, f"{row.count} of {len(board.columns)}"),
                 _num(row.average_rank, "" if row.average_rank is None else f"{row.average_rank:.2f}")]
        if has_collection:
            cells.append(_collection(row))
        for column in board.columns:
            value, flags = row.values.get(column.name), board.cell_flags(row.label, column.name)
            if column.name not in row.values:
                cells.append('<td data-v=""></td>')
                continue
            title = "\n".join(f"⚠{f.number} {f.message}" for f in flags) or (
                "skipped or missing" if value is None else f"{value:.6g}, rank {row.ranks.get(column.name, 0):g}")
            cells.append(_num(value, cls="mismatch" if flags else "", title=title,
                              bold=value is not None and percent(value) == percent(best[column.name])))
        body.append(f"<tr>{''.join(cells)}</tr>")
    return (f'<div class="scroll"><table class="board"><thead><tr>{"".join(head)}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>')


def _plot(board: Leaderboard) -> str:
    """Each model's column scores as small dots (orange where flagged) and its average as a large one."""
    rows = [r for r in board.rows if any(v is not None for v in r.values.values())]
    if not rows:
        return ""
    values = [v for r in rows for v in r.values.values() if v is not None]
    tick = 0.1 if max(values) - min(values) <= 0.6 else 0.2
    lo, hi = math.floor(min(values) / tick) * tick, math.ceil(max(values) / tick) * tick
    hi = hi if hi > lo else lo + tick
    left, width, step, top = 260, 620, 26, 34
    height = top + step * len(rows) + 16

    def x(v: float) -> float:
        return left + width * (v - lo) / (hi - lo)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 30}" height="{height}" '
             f'role="img" aria-label="scores per model">']
    for k in range(round((hi - lo) / tick) + 1):
        v = lo + k * tick
        parts.append(f'<line x1="{x(v):.1f}" x2="{x(v):.1f}" y1="{top - 6}" y2="{height - 12}" stroke="#e3e7ec"/>'
                     f'<text x="{x(v):.1f}" y="{top - 12}" text-anchor="middle">{100 * v:.0f}%</text>')
    for i, row in enumerate(rows):
        y = top + step * i + step / 2
        name = row.label if len(row.label) <= 36 else row.label[:35] + "…"
        parts.append(f'<text x="{left - 10}" y="{y + 4:.1f}" text-anchor="end">{html.escape(name)}'
                     f"<title>{html.escape(row.label)}</title></text>"
                     f'<line x1="{left}" x2="{left + width}" y1="{y:.1f}" y2="{y:.1f}" stroke="#f0f2f5"/>')
        for column, value in row.values.items():
            if value is None:
                continue
            color = "#e8890c" if board.cell_flags(row.label, column) else "#7d8a99"
            parts.append(f'<circle cx="{x(value):.1f}" cy="{y:.1f}" r="4" fill="{color}" fill-opacity=".6">'
                         f"<title>{html.escape(column)}: {percent(value)}%</title></circle>")
        if row.average is not None:
            parts.append(f'<circle cx="{x(row.average):.1f}" cy="{y:.1f}" r="7" fill="#1f5fae" stroke="white">'
                         f"<title>average {percent(row.average)}% over {len(board.shared)} shared columns</title>"
                         "</circle>")
    parts.append("</svg>")
    return (f'<figure>{"".join(parts)}<figcaption>Large dots: a model\'s average over the columns every model has; '
            f"small dots: its score on each column (orange where a flag concerns the cell).</figcaption></figure>")


def _flags(board: Leaderboard) -> str:
    if not board.flags:
        return ('<p class="meta">No flags: every column compares the same split of data with the same fingerprint, '
                "and every results file carries its provenance.</p>")
    items = "".join(f'<li><span class="warn">⚠{f.number}</span> {html.escape(f.message)}</li>' for f in board.flags)
    return (f'<div class="flags"><p><strong>Not everything here is comparable.</strong> Flagged headers and rows '
            f"are marked ⚠ with the numbers below; cells that differ from the column's majority are outlined."
            f"</p><ul>{items}</ul></div>")


def _files(rows: list[Row]) -> str:
    items = "".join(f"<li>{html.escape(r.label)}: {html.escape(str(r.path))}</li>" for r in rows)
    return f'<details><summary>results files</summary><ul class="meta">{items}</ul></details>'


def write_html(board: Leaderboard, path: Path) -> Path:
    """Write the leaderboard page to `path`."""
    title = f"Leaderboard of {len(board.rows)} model{'s' * (len(board.rows) != 1)} over {len(board.columns)} tasks"
    document = "\n".join([
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)} — transferlab</title><style>{CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="meta">Each column is a (dataset, task) with its main metric in %; '
        f"{html.escape(board.comparison)}. Ranks are per column among the models that have it, 1 is best, ties "
        f"share their mean. Sorted by {html.escape(board.sort)}; click a header to sort by it."
        + (f" Not shown: {html.escape(', '.join(board.hidden))}, where every model was skipped." if board.hidden
           else "") + "</p>",
        _flags(board), _table(board), "<h2>Scores per model</h2>", _plot(board), _files(board.rows),
        f"<script>{SCRIPT}</script></body></html>\n"])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, document)
