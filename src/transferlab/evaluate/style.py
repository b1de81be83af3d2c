"""The CSS of the HTML reports (evaluation, leaderboard, curation), inline in each page.

A module of its own so that a page can share it without importing what draws the evaluation report's
figures: the curation report draws its own SVG and must not pay for importing matplotlib.
"""

CSS = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #222;
       max-width: 1200px; margin: 2em auto; padding: 0 1em; }
h1, h2 { word-break: break-word; }
h1 { margin-bottom: .2em; }
.meta { color: #666; margin-top: 0; }
section.model { border-top: 3px solid #d5dbe3; margin-top: 2.5em; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ddd; padding: .35em .7em; }
th { background: #f4f6f8; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tbody tr:nth-child(even) { background: #fafbfc; }
tr.group td { border-top: 2px solid #c4ccd6; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(460px, 1fr)); gap: 1.5em; }
.grid figure.wide { grid-column: 1 / -1; }
figure { margin: 0 0 1em; }
img { max-width: 100%; height: auto; }
figcaption { color: #555; font-size: 90%; }
div.collection { border-left: 4px solid #1f5fae; background: #f5f8fc; padding: .2em 1em .6em; }
ul.missing { font-size: 90%; } ul.missing li { margin: .3em 0; word-break: break-word; }
code { font-size: 90%; background: #eef1f5; padding: 0 .2em; }
.warning { border-left: 4px solid #c0392b; background: #fdf0ee; padding: .5em 1em; margin: 1em 0; }
"""
