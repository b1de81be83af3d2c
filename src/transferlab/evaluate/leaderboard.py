"""A leaderboard of many results.json files: models × (dataset, task), with the checks that make it honest.

`find_results` turns paths (files, run or eval directories, folders searched recursively) into results.json
files; `build` reads them into a `Leaderboard`: one column per (dataset, task) holding that task's main
metric (a column where every model was skipped is not shown), per model the average and the average rank (1
is best, ties share the mean rank) over the columns every model has — an average over other columns would not
compare like with like (MTEB and DataComp's leaderboard also rank over one set of tasks) — and `flags`: every
reason two numbers in one column, or two rows, may not measure the same thing (different dataset fingerprints
or splits, different main metrics, one suite name with two suite hashes, collection averages over different
tasks, results without provenance, random weights or
weights of unrecorded origin). A flag is shown, never dropped; `--strict` turns them into
an error. `write_csv`, `write_markdown` and leaderboard_page.write_html write it.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.stats import rankdata

from transferlab.errors import UserError, did_you_mean
from transferlab.fileio import atomic_write
from transferlab.models.weights import is_random, random_notice, recorded

# The main metric of a task entry written before results.json named one ("main"); retrieval is special.
DEFAULT_MAIN = {"zeroshot_classification": "acc1", "linear_probe": "acc1", "knn": "acc1", "ncm": "acc1",
                "retrieval": "mean_recall@1", "clustering": "nmi"}
RETRIEVAL_SIDES = ("image_retrieval_recall@1", "text_retrieval_recall@1")
SHORT_TASKS = {"zeroshot_classification": "zero-shot", "linear_probe": "probe", "knn": "kNN", "ncm": "NCM",
               "retrieval": "retrieval", "clustering": "clusters"}
SORTS = ("average", "rank")
NO_PROVENANCE = "no provenance: cannot check the data is the same"
NO_ORIGIN = ("written before results.json recorded where the weights came from: they may be a random "
             "initialisation. Evaluate the model again to record it.")


@dataclass
class Flag:
    """One reason not to trust a comparison: its footnote number, kind and message (naming the files); the
    results `files` involved; the `columns`, `cells` (row label, column name) and `rows` (labels) it marks."""
    number: int
    kind: str
    message: str
    columns: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    cells: list[tuple[str, str]] = field(default_factory=list)
    rows: list[str] = field(default_factory=list)


@dataclass
class Column:
    dataset: str
    task: str
    metrics: list[str]  # the main metric(s) its cells hold; more than one is flagged

    @property
    def name(self) -> str:
        return f"{self.dataset}/{self.task}"


@dataclass
class Row:
    label: str
    model: str
    path: Path
    results: dict
    values: dict[str, float | None] = field(default_factory=dict)  # column name -> main metric; None is blank
    splits: dict[str, str] = field(default_factory=dict)
    average: float | None = None
    count: int = 0
    average_rank: float | None = None
    ranks: dict[str, float] = field(default_factory=dict)

    @property
    def provenance(self) -> dict | None:
        prov = self.results.get("provenance")
        return prov if isinstance(prov, dict) else None

    @property
    def collection(self) -> str | None:
        c = self.results.get("collection")
        if not isinstance(c, dict):
            return None
        average = c.get("average")
        shown = "—" if not _finite(average) else f"{100 * float(average):.1f}%"
        return f"{c.get('name', '?')} average {shown} over {c.get('ran', '?')} of {c.get('size', '?')}"


@dataclass
class Leaderboard:
    """`shared`: the columns every row has a value in, the only ones averages and average ranks are over;
    `hidden`: columns where every model was skipped, which are not shown."""
    rows: list[Row]
    columns: list[Column]
    flags: list[Flag]
    sort: str
    shared: list[str] = field(default_factory=list)
    hidden: list[str] = field(default_factory=list)

    @property
    def comparison(self) -> str:
        """What the averages are over, in one sentence, naming the models that leave columns out of them."""
        n, k = len(self.columns), len(self.shared)
        if k == n:
            return f"averages and average ranks are over all {n} columns"
        lacking = [f"{r.label} ({r.count} of {n})" for r in self.rows if r.count < n]
        why = f"not every model has every column: {', '.join(lacking)}"
        if not k:
            return (f"no average: no column is shared by every model, and an average over different columns "
                    f"does not compare like with like ({why})")
        return f"averages and average ranks are over the {k} of {n} columns every model has ({why})"

    def column_flags(self, name: str) -> list[Flag]:
        return [f for f in self.flags if name in f.columns]

    def row_flags(self, label: str) -> list[Flag]:
        return [f for f in self.flags if label in f.rows]

    def cell_flags(self, label: str, column: str) -> list[Flag]:
        return [f for f in self.flags if (label, column) in f.cells]


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def shown(path: Path) -> str:
    """A results file as messages name it: relative to the working directory when it is below it."""
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def find_results(paths: list[Path]) -> list[Path]:
    """results.json files from files, directories holding results.json or eval/results.json, or folders
    searched recursively; each file once, in the order given."""
    found: dict[Path, None] = {}
    for path in map(Path, paths):
        if path.is_file():
            hits = [path]
        elif path.is_dir():
            direct = [p for p in (path / "results.json", path / "eval" / "results.json") if p.is_file()]
            hits = direct[:1] or sorted(path.rglob("results.json"))
        else:
            raise UserError(f"{path} does not exist. Pass results.json files, or directories that hold them "
                            f"(a run, its eval/ folder, or the --out folder of `transferlab eval`).")
        if not hits:
            raise UserError(f"{path} holds no results.json, neither directly, in eval/, nor in any folder below it. "
                            f"Pass the folder `transferlab eval --out` wrote, a run directory, or a results.json.")
        for hit in hits:
            found.setdefault(hit.resolve(), None)
    return list(found)


def read_results(path: Path) -> dict:
    """A results.json as a dict, or a UserError naming the file and what is wrong with it."""
    try:
        results = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise UserError(f"{path} is not valid JSON (line {err.lineno}, column {err.colno}: {err.msg}); a "
                        f"results.json is written by `transferlab eval`. Re-run the evaluation or leave the "
                        f"file out.") from None
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"{path} cannot be read as a results.json ({err}).") from None
    tasks = results.get("tasks") if isinstance(results, dict) else None
    if not isinstance(tasks, list) or "model" not in results or not all(
            isinstance(t, dict) and {"task", "dataset"} <= t.keys() for t in tasks):
        raise UserError(f"{path} is JSON but not a transferlab results.json: it needs a 'model' and a 'tasks' list "
                        f"whose entries name their 'task' and 'dataset' (what `transferlab eval` writes). "
                        f"Leave it out, or pass the folder of the results you mean.")
    return results


def main_metric(entry: dict) -> tuple[str, float | None] | None:
    """(metric name, value) of a task entry's main metric; the value is None when the task was skipped or the
    metric is missing. None when the task has no main metric (few-shot and others that do not name one)."""
    metrics = entry.get("metrics") or {}
    name = entry.get("main") or DEFAULT_MAIN.get(str(entry["task"]))
    if name is None:
        return None
    value = metrics.get(name)
    if value is None and "main" not in entry and entry["task"] == "retrieval":
        sides = [metrics.get(s) for s in RETRIEVAL_SIDES]
        value = sum(sides) / 2 if all(_finite(s) for s in sides) else None
    return str(name), float(value) if _finite(value) else None


def _labels(models: list[str], paths: list[Path]) -> list[str]:
    """Model names; one that several files share gets the shortest tail of its folder that tells them apart."""
    labels = list(models)
    for name in set(models):
        where = [i for i, m in enumerate(models) if m == name]
        if len(where) < 2:
            continue
        parts = [paths[i].parent.parts for i in where]
        for depth in range(1, max(map(len, parts)) + 1):
            tails = ["/".join(p[-depth:]) for p in parts]
            if len(set(tails)) == len(tails):
                break
        else:
            tails = [str(paths[i]) for i in where]
        for i, tail in zip(where, tails, strict=True):
            labels[i] = f"{name} ({tail})"
    return labels


def _read_rows(files: list[Path]) -> tuple[list[Row], list[Column], list[tuple[str, str]], list[str]]:
    """Rows and the columns some model has a value in; (file, message) for tasks a file holds twice (the first
    is used); the names of the columns every model skipped."""
    results = [read_results(p) for p in files]
    labels = _labels([str(r["model"]) for r in results], files)
    columns: dict[str, Column] = {}
    rows, doubles = [], []
    for path, label, res in zip(files, labels, results, strict=True):
        row = Row(label, str(res["model"]), path, res)
        for entry in res["tasks"]:
            main = main_metric(entry)
            if main is None:
                continue
            column = columns.setdefault(f"{entry['dataset']}/{entry['task']}",
                                        Column(str(entry["dataset"]), str(entry["task"]), []))
            if column.name in row.values:
                doubles.append((shown(path), f"{shown(path)} holds {column.name} more than once; the first entry "
                                           f"(split {row.splits[column.name]}) is used"))
                continue
            if main[0] not in column.metrics and main[1] is not None:
                column.metrics.append(main[0])
            row.values[column.name], row.splits[column.name] = main[1], str(entry.get("split", "?"))
        rows.append(row)
    hidden = [name for name in columns if all(row.values.get(name) is None for row in rows)]
    for row in rows:
        for name in hidden:
            row.values.pop(name, None)
    return rows, [c for name, c in columns.items() if name not in hidden], doubles, hidden


def _score(rows: list[Row], columns: list[Column]) -> list[str]:
    """Ranks per column (1 is best, ties share their mean rank); averages and average ranks over the columns
    every row has, which it returns (none shared: no averages)."""
    for column in columns:
        have = [r for r in rows if r.values.get(column.name) is not None]
        for row, rank in zip(have, rankdata([-r.values[column.name] for r in have], method="average"), strict=True):
            row.ranks[column.name] = float(rank)
    shared = [c.name for c in columns if all(r.values.get(c.name) is not None for r in rows)]
    for row in rows:
        row.count = sum(v is not None for v in row.values.values())
        row.average = float(np.mean([row.values[name] for name in shared])) if shared else None
        row.average_rank = float(np.mean([row.ranks[name] for name in shared])) if shared else None
    return shared


def _groups(items: list[tuple[str, object]]) -> list[list[str]]:
    """Labels grouped by value, the largest group first (ties: first seen)."""
    by_value: dict[object, list[str]] = {}
    for label, value in items:
        by_value.setdefault(value, []).append(label)
    return sorted(by_value.values(), key=len, reverse=True)


def _describe(groups: list[list[str]], value_of: dict[str, object], file_of: dict[str, str]) -> str:
    return " vs ".join(f"{value_of[g[0]]} ({', '.join(file_of[label] for label in g)})" for g in groups)


def _check(rows: list[Row], columns: list[Column], doubles: list[tuple[str, str]]) -> list[Flag]:
    flags: list[Flag] = []
    file_of = {r.label: shown(r.path) for r in rows}

    def add(kind: str, message: str, **where) -> None:
        flags.append(Flag(len(flags) + 1, kind, message, **where))

    for row in rows:
        if row.provenance is None:
            add("provenance", f"{shown(row.path)}: {NO_PROVENANCE}", files=[shown(row.path)], rows=[row.label])
        weights = recorded(row.results)  # provenance.weights (models/weights.py)
        if is_random(weights):
            add("weights", f"{shown(row.path)}: {random_notice(row.model, weights)} Leave it out of a "
                f"comparison of trained models.", files=[shown(row.path)], rows=[row.label])
        elif row.provenance is not None and weights is None:
            add("weights", f"{shown(row.path)}: {NO_ORIGIN}", files=[shown(row.path)], rows=[row.label])
    for column in columns:
        have = [r for r in rows if r.values.get(column.name) is not None]
        value_of = {r.label: r.splits[column.name] for r in have}
        checks = [("split", "the split differs", value_of)]
        if len(column.metrics) > 1:
            checks.append(("metric", "the main metric differs", {r.label: main_metric_name(r, column) for r in have}))
        for kind, what, value_of in checks:
            groups = _groups(list(value_of.items()))
            if len(groups) > 1:
                add(kind, f"{column.name}: {what}: {_describe(groups, value_of, file_of)}", columns=[column.name],
                    files=[file_of[label] for g in groups for label in g],
                    cells=[(label, column.name) for g in groups[1:] for label in g])
    # A fingerprint belongs to a dataset, so one flag covers all of a dataset's columns.
    for dataset in dict.fromkeys(c.dataset for c in columns):
        names = [c.name for c in columns if c.dataset == dataset]
        have = [r for r in rows if r.provenance is not None and any(r.values.get(n) is not None for n in names)]
        fingerprints = {r.label: _fingerprint(r, dataset) for r in have}
        cells_of = {r.label: [(r.label, n) for n in names if r.values.get(n) is not None] for r in have}
        where = f"{dataset} ({', '.join(n.split('/', 1)[1] for n in names)})"
        unknown = [label for label, fp in fingerprints.items() if fp is None]
        if unknown:
            add("fingerprint", f"{where}: no fingerprint of {dataset} in the provenance of "
                f"{', '.join(file_of[label] for label in unknown)}: cannot check the data is the same",
                columns=names, files=[file_of[label] for label in unknown],
                cells=[cell for label in unknown for cell in cells_of[label]])
        known = {label: fp for label, fp in fingerprints.items() if fp is not None}
        groups = _groups(list(known.items()))
        if len(groups) > 1:
            add("fingerprint", f"{where}: the dataset fingerprints differ: {_describe(groups, known, file_of)}",
                columns=names, files=[file_of[label] for g in groups for label in g],
                cells=[cell for g in groups[1:] for label in g for cell in cells_of[label]])
    for kind, key, what in (("suite", _suite_key, "has different suite hashes"),
                            ("collection", _collection_key, "averages over different tasks")):
        named: dict[str, list[tuple[str, object]]] = {}
        for row in rows:
            found = key(row)
            if found is not None:
                named.setdefault(found[0], []).append((row.label, found[1]))
        for name, items in named.items():
            groups = _groups(items)
            if len(groups) > 1:
                value_of = dict(items)
                add(kind, f"{kind} {name} {what}: {_describe(groups, value_of, file_of)}",
                    files=[file_of[label] for g in groups for label in g],
                    rows=[label for g in groups[1:] for label in g])
    for path, message in doubles:
        add("duplicate", message, files=[path])
    return flags


def main_metric_name(row: Row, column: Column) -> str | None:
    for entry in row.results["tasks"]:
        if f"{entry['dataset']}/{entry['task']}" == column.name:
            main = main_metric(entry)
            return None if main is None else main[0]
    return None


def _fingerprint(row: Row, dataset: str) -> str | None:
    entry = (row.provenance.get("datasets") or {}).get(dataset)
    fp = entry.get("fingerprint") if isinstance(entry, dict) else None
    if not fp:
        return None
    samples = entry.get("samples")
    return f"{str(fp)[:12]}" + (f" ({samples} samples)" if samples is not None else "")


def _suite_key(row: Row) -> tuple[str, object] | None:
    prov, suite = row.provenance, row.results.get("suite")
    if prov is None or suite is None or not prov.get("suite_hash"):
        return None
    return str(suite), f"suite_hash {str(prov['suite_hash'])[:12]}"


def _collection_key(row: Row) -> tuple[str, object] | None:
    c = row.results.get("collection")
    if not isinstance(c, dict) or "name" not in c:
        return None
    return str(c["name"]), f"{c.get('ran')} of {c.get('size')} ran, missing {sorted(c.get('missing') or [])}"


def _sorted(rows: list[Row], columns: list[Column], sort: str) -> list[Row]:
    names = [c.name for c in columns]
    if sort not in SORTS and sort not in names:
        raise UserError(f"--sort takes average, rank or a column name ({', '.join(names) or 'none'}), not "
                        f"{sort!r}.{did_you_mean(sort, [*SORTS, *names])}")

    def key(row: Row) -> tuple:
        if sort == "rank":
            value = row.average_rank
            return (value is None, value if value is not None else 0.0, row.label)
        value = row.average if sort == "average" else row.values.get(sort)
        return (value is None, -value if value is not None else 0.0, row.label)
    return sorted(rows, key=key)


def build(paths: list[Path], sort: str = "average") -> Leaderboard:
    """The leaderboard of every results.json found under `paths`, sorted by `sort` (average, rank or a
    column name, `<dataset>/<task>`)."""
    files = find_results(paths)
    if not files:
        raise UserError("No results.json to put on a leaderboard: pass results.json files or folders holding them.")
    rows, columns, doubles, hidden = _read_rows(files)
    shared = _score(rows, columns)
    return Leaderboard(_sorted(rows, columns, sort), columns, _check(rows, columns, doubles), sort, shared, hidden)


def marks(flags: list[Flag]) -> str:
    """' ⚠1,3' for flags 1 and 3: the header or label mark that the footnotes below the table explain."""
    return f" ⚠{','.join(str(f.number) for f in flags)}" if flags else ""


def percent(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.1f}"


def _summary_cells(board: Leaderboard, row: Row) -> list[str]:
    return [f"{row.count} of {len(board.columns)}", "" if row.average_rank is None else f"{row.average_rank:.2f}"]


def write_csv(board: Leaderboard, path: Path) -> Path:
    """Values as fractions (as in results.json); flagged headers marked ⚠n, explained in '#' lines at the end
    (pandas: read_csv(path, comment='#'))."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["position", "model", "average", "columns", "average_rank", "collection", "flags", "file",
                     *[c.name + marks(board.column_flags(c.name)) for c in board.columns]])
    for position, row in enumerate(board.rows, 1):
        values = [row.values.get(c.name) for c in board.columns]
        writer.writerow([position, row.label, "" if row.average is None else f"{row.average:.6g}",
                         *_summary_cells(board, row), row.collection or "",
                         marks(board.row_flags(row.label)).strip(), str(row.path),
                         *["" if v is None else f"{v:.6g}" for v in values]])
    for flag in board.flags:
        buffer.write(f"# ⚠{flag.number} {flag.message}\n")
    return atomic_write(path, buffer.getvalue())


def write_markdown(board: Leaderboard, path: Path) -> Path:
    """A GitHub markdown table, values in %, flags as ⚠n footnotes below it."""
    def cell(text: str) -> str:
        return text.replace("|", "\\|")
    head = ["#", "model", "average %", "columns", "avg rank", *[
        cell(f"{c.dataset}<br>{SHORT_TASKS.get(c.task, c.task)}{marks(board.column_flags(c.name))}")
        for c in board.columns]]
    has_collection = any(r.collection for r in board.rows)
    if has_collection:
        head.insert(5, "collection")
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join([":-", ":-", *["-:"] * (len(head) - 2)]) + "|"]
    for position, row in enumerate(board.rows, 1):
        values = [percent(row.values.get(c.name)) + ("*" if board.cell_flags(row.label, c.name) else "")
                  for c in board.columns]
        cells = [str(position), cell(row.label + marks(board.row_flags(row.label))), percent(row.average),
                 *_summary_cells(board, row), *values]
        if has_collection:
            cells.insert(5, cell(row.collection or ""))
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Main metric per column in %; {board.comparison}; rank 1 is best. Sorted by {board.sort}."]
    if board.flags:
        lines += ["", "⚠ These numbers may not be comparable (* marks the cells that differ):", ""]
        lines += [f"- ⚠{f.number} {cell(f.message)}" for f in board.flags]
    return atomic_write(path, "\n".join(lines) + "\n")
