"""The leaderboard over hand-written results.json files: its maths against brute force, its flags, its files
and the `transferlab leaderboard` command."""

from __future__ import annotations

import csv
import io
import itertools
import json
from html.parser import HTMLParser
from pathlib import Path

import pytest
from typer.testing import CliRunner

from transferlab.cli import app
from transferlab.errors import UserError
from transferlab.evaluate.leaderboard import build, main_metric, write_csv, write_markdown
from transferlab.evaluate.leaderboard_page import write_html

FP = {"cifar10": "c1f4a0", "digits": "d161t5", "flickr": "f11ck4"}


def provenance(**fingerprints: str) -> dict:
    return {"transferlab": "0.1.0", "commit": "abc123", "dirty": False, "libraries": {"torch": "2.14.1"},
            "device": "cpu", "precision": "float32", "suite_hash": "5017e",
            "weights": {"origin": "pretrained", "library": "open_clip", "tag": "laion2b_s34b_b79k"},
            "datasets": {name: {"samples": 100, "fingerprint": fp} for name, fp in {**FP, **fingerprints}.items()}}


def entry(task: str, dataset: str, metrics: dict, main: str | None = None, split: str = "test", **extra) -> dict:
    out = {"task": task, "dataset": dataset, "split": split, "metrics": metrics, "seconds": 1.0, **extra}
    return out if main is None else {**out, "main": main}


def write(path: Path, model: str, tasks: list[dict], prov: dict | None = None, **extra) -> Path:
    results = {"model": model, "suite": "mine", "created": "2026-01-01T00:00:00", "tasks": tasks, **extra}
    if prov is not None:
        results["provenance"] = prov
    path.mkdir(parents=True, exist_ok=True)
    (path / "results.json").write_text(json.dumps(results))
    return path / "results.json"


@pytest.fixture
def three(tmp_path) -> Path:
    """Three models in the layout of `transferlab eval --out evals a b c`, plus an older run without provenance.

    alpha and beta tie on cifar10/zeroshot; gamma skipped zero-shot (image-only); delta (old file) has no
    "main" keys and a retrieval with only the two directions."""
    evals = tmp_path / "evals"
    write(evals / "alpha", "alpha", [
        entry("zeroshot_classification", "cifar10", {"acc1": 0.8, "acc5": 0.95}, "acc1"),
        entry("linear_probe", "cifar10", {"acc1": 0.9}, "acc1"),
        entry("knn", "digits", {"acc1": 0.7}, "acc1"),
        entry("fewshot", "digits", {"knn@1shot": 0.5}),
        entry("retrieval", "flickr", {"mean_recall@1": 0.4, "image_retrieval_recall@1": 0.3}, "mean_recall@1"),
    ], provenance())
    write(evals / "beta", "beta", [
        entry("zeroshot_classification", "cifar10", {"acc1": 0.8}, "acc1"),
        entry("linear_probe", "cifar10", {"acc1": 0.85}, "acc1"),
        entry("knn", "digits", {"acc1": 0.75}, "acc1"),
        entry("clustering", "digits", {"nmi": 0.6, "ari": 0.5}, "nmi"),
    ], provenance())
    write(evals / "gamma", "gamma", [
        entry("zeroshot_classification", "cifar10", {}, "acc1", skipped="image-only model: no text tower"),
        entry("linear_probe", "cifar10", {"acc1": 0.95}, "acc1"),
        entry("knn", "digits", {"acc1": 0.6}, "acc1"),
    ], provenance())
    write(tmp_path / "old" / "eval", "delta", [
        entry("zeroshot_classification", "cifar10", {"acc1": 0.5}),
        entry("retrieval", "flickr", {"image_retrieval_recall@1": 0.2, "text_retrieval_recall@1": 0.4}),
        entry("clustering", "digits", {"nmi": 0.6}),
    ])
    return tmp_path


def brute_force(table: dict[str, dict[str, float]]) -> dict[str, tuple[float | None, float | None]]:
    """(average, average rank) per model over the columns every model has (None, None when there is none); a
    model's rank in a column is 1 + the number of models strictly better + half the number of others equal to it."""
    shared = set.intersection(*(set(cells) for cells in table.values()))
    out = {}
    for model, cells in table.items():
        ranks = []
        for column in shared:
            others = [m[column] for name, m in table.items() if name != model]
            ranks.append(1 + sum(v > cells[column] for v in others) + 0.5 * sum(v == cells[column] for v in others))
        out[model] = (sum(cells[c] for c in shared) / len(shared), sum(ranks) / len(ranks)) if shared else (None, None)
    return out


CELLS = {
    "alpha": {"cifar10/zeroshot_classification": 0.8, "cifar10/linear_probe": 0.9, "digits/knn": 0.7,
              "flickr/retrieval": 0.4},
    "beta": {"cifar10/zeroshot_classification": 0.8, "cifar10/linear_probe": 0.85, "digits/knn": 0.75,
             "digits/clustering": 0.6},
    "gamma": {"cifar10/linear_probe": 0.95, "digits/knn": 0.6},
    "delta": {"cifar10/zeroshot_classification": 0.5, "flickr/retrieval": pytest.approx(0.3),
              "digits/clustering": 0.6},
}


def test_cells_averages_and_ranks_against_brute_force(three):
    board = build([three / "evals", three / "old"])
    cells = {r.model: {c: v for c, v in r.values.items() if v is not None} for r in board.rows}
    assert cells == CELLS
    assert "digits/fewshot" not in [c.name for c in board.columns]
    gamma = next(r for r in board.rows if r.model == "gamma")
    assert "cifar10/zeroshot_classification" in gamma.values and gamma.values["cifar10/zeroshot_classification"] is None
    # no column is shared by all four: no averages, and the board says why, naming who lacks columns
    assert board.shared == [] and all(r.average is None and r.average_rank is None for r in board.rows)
    assert "no column is shared by every model" in board.comparison and "gamma (2 of 5)" in board.comparison
    assert {r.model: r.count for r in board.rows} == {m: len(c) for m, c in cells.items()}
    # the tie on cifar10 zero-shot: alpha and beta share rank 1.5; the skipped gamma is not ranked there
    assert {r.model: r.ranks.get("cifar10/zeroshot_classification") for r in board.rows} == {
        "alpha": 1.5, "beta": 1.5, "gamma": None, "delta": 3.0}
    assert [r.model for r in board.rows] == ["alpha", "beta", "delta", "gamma"]  # no averages: by name

    three_models = build([three / "evals"])
    expected = brute_force({m: CELLS[m] for m in ("alpha", "beta", "gamma")})
    assert three_models.shared == ["cifar10/linear_probe", "digits/knn"]
    for row in three_models.rows:
        assert (row.average, row.average_rank) == pytest.approx(expected[row.model])
    assert [r.model for r in three_models.rows] == sorted(expected, key=lambda m: -expected[m][0])
    assert "over the 2 of 5 columns every model has" in three_models.comparison


def test_an_easy_single_task_cannot_outrank_a_full_run(tmp_path):
    """A model evaluated on one easy task is compared with a full run on that task alone; one evaluated on a task
    the others lack gets no average at all, so it cannot top the board by having run less."""
    datasets = ["easy", *(f"hard{i}" for i in range(8))]
    write(tmp_path / "full", "full", [entry("knn", d, {"acc1": 0.95 if d == "easy" else 0.55}, "acc1")
                                      for d in datasets], provenance())
    write(tmp_path / "aaa-single", "aaa-single", [entry("knn", "easy", {"acc1": 0.881}, "acc1")], provenance())
    board = build([tmp_path])
    assert [(r.model, r.average, r.count) for r in board.rows] == [("full", 0.95, 9), ("aaa-single", 0.881, 1)]
    assert board.shared == ["easy/knn"]
    md = write_markdown(board, tmp_path / "b.md").read_text()
    assert "| 1 of 9 |" in md and "over the 1 of 9 columns every model has" in md

    write(tmp_path / "aaa-single", "aaa-single", [entry("knn", "other", {"acc1": 0.99}, "acc1")], provenance())
    board = build([tmp_path])
    assert all(r.average is None for r in board.rows) and board.shared == []
    page = CellCollector.parse(write_html(board, tmp_path / "b.html").read_text())
    averages = [c for c in page.cells if c["title"] and c["title"].startswith("not comparable")]
    assert len(averages) == 2 and all(c["text"] == "—" for c in averages)
    assert "no column is shared by every model" in averages[0]["title"]


def test_a_column_every_model_skipped_is_not_shown(three):
    write(three / "evals" / "beta", "beta", [
        entry("zeroshot_classification", "cifar10", {}, "acc1", skipped="no text tower"),
        entry("linear_probe", "cifar10", {"acc1": 0.85}, "acc1")], provenance())
    write(three / "evals" / "alpha", "alpha", [
        entry("zeroshot_classification", "cifar10", {}, "acc1", skipped="no text tower"),
        entry("linear_probe", "cifar10", {"acc1": 0.9}, "acc1")], provenance())
    write(three / "evals" / "gamma", "gamma", [entry("linear_probe", "cifar10", {"acc1": 0.8}, "acc1")], provenance())
    board = build([three / "evals"])
    assert [c.name for c in board.columns] == ["cifar10/linear_probe"]
    assert board.hidden == ["cifar10/zeroshot_classification"]
    assert all("cifar10/zeroshot_classification" not in r.values for r in board.rows)
    assert [(r.model, r.count) for r in board.rows] == [("alpha", 1), ("beta", 1), ("gamma", 1)]
    page = write_html(board, three / "b.html").read_text()
    assert "cifar10/zeroshot_classification, where every model was skipped" in page
    code, out = invoke("leaderboard", str(three / "evals"))
    assert code == 0 and "Not shown: cifar10/zeroshot_classification" in out


def test_sort_orders(three):
    paths = [three / "evals", three / "old"]
    by_rank = build([three / "evals"], sort="rank")
    assert [r.average_rank for r in by_rank.rows] == sorted(r.average_rank for r in by_rank.rows)
    by_probe = build(paths, sort="cifar10/linear_probe")
    assert [r.model for r in by_probe.rows] == ["gamma", "alpha", "beta", "delta"]  # delta has none: last
    by_zeroshot = build(paths, sort="cifar10/zeroshot_classification")
    assert [r.model for r in by_zeroshot.rows] == ["alpha", "beta", "delta", "gamma"]  # tie by name; skipped last
    with pytest.raises(UserError, match="Did you mean 'cifar10/linear_probe'"):
        build(paths, sort="cifar10/linear_prob")


def test_default_main_metrics():
    assert main_metric({"task": "ncm", "dataset": "d", "metrics": {"acc1": 0.4}}) == ("acc1", 0.4)
    assert main_metric({"task": "retrieval", "dataset": "d", "metrics": {
        "image_retrieval_recall@1": 0.2, "text_retrieval_recall@1": 0.6}}) == ("mean_recall@1", pytest.approx(0.4))
    assert main_metric({"task": "fewshot", "dataset": "d", "metrics": {"knn@1shot": 0.3}}) is None
    assert main_metric({"task": "fewshot", "dataset": "d", "main": "knn@1shot",
                        "metrics": {"knn@1shot": 0.3}}) == ("knn@1shot", 0.3)
    assert main_metric({"task": "knn", "dataset": "d", "metrics": {}, "skipped": "why"}) == ("acc1", None)


def test_clean_results_have_no_flags(three):
    board = build([three / "evals"])
    assert board.flags == []


def test_no_provenance_is_flagged_not_hidden(three):
    board = build([three / "evals", three / "old"])
    (flag,) = board.flags
    assert flag.kind == "provenance" and "no provenance" in flag.message and "old" in flag.message
    assert flag.rows == ["delta"] and next(r for r in board.rows if r.model == "delta").count == 3


def mismatched(tmp_path: Path) -> list[Path]:
    evals = tmp_path / "evals"
    write(evals / "eps", "eps", [entry("linear_probe", "cifar10", {"acc1": 0.99}, "acc1"),
                                 entry("knn", "digits", {"acc1": 0.7}, "acc1", split="val")],
          provenance(cifar10="0ther0ne"))
    return [evals]


def test_fingerprint_and_split_mismatch_flagged_everywhere(three, tmp_path):
    board = build(mismatched(three))
    kinds = {(f.kind, tuple(f.columns)) for f in board.flags}
    assert kinds == {("fingerprint", ("cifar10/zeroshot_classification", "cifar10/linear_probe")),
                     ("split", ("digits/knn",))}
    fingerprint = next(f for f in board.flags if f.kind == "fingerprint")
    assert "eps" in fingerprint.message and "0ther0ne" in fingerprint.message and "c1f4a0" in fingerprint.message
    assert fingerprint.cells == [("eps", "cifar10/linear_probe")]  # the minority is marked
    # one flag per dataset; eps has no zero-shot, so only its probe cell differs
    assert board.column_flags("cifar10/zeroshot_classification") == [fingerprint]

    out = tmp_path / "out"
    out.mkdir()
    with open(write_csv(board, out / "b.csv"), newline="") as handle:
        lines = list(csv.reader(handle))
    header = lines[0]
    assert f"cifar10/linear_probe ⚠{fingerprint.number}" in header
    assert f"cifar10/zeroshot_classification ⚠{fingerprint.number}" in header
    assert "digits/clustering" in header  # unflagged: no mark
    footnotes = [line for line in (out / "b.csv").read_text().splitlines() if line.startswith("#")]
    assert f"# ⚠{fingerprint.number} cifar10 (zeroshot_classification, linear_probe): the dataset fingerprints " \
           "differ" in "\n".join(footnotes) and len(footnotes) == 2
    md = write_markdown(board, out / "b.md").read_text()
    assert f"cifar10<br>probe ⚠{fingerprint.number}" in md and "99.0*" in md
    assert f"- ⚠{fingerprint.number} cifar10 (zeroshot_classification, linear_probe): the dataset fingerprints" in md

    cells = CellCollector.parse(write_html(board, out / "b.html").read_text())
    flagged_headers = [h for h in cells.headers if "flag" in h["class"]]
    assert [h["text"].split()[0] for h in flagged_headers] == ["cifar10", "cifar10", "digits"]
    mismatches = [c for c in cells.cells if "mismatch" in c["class"]]
    assert [c["v"] for c in mismatches] == ["0.99", "0.7"] and "0ther0ne" in mismatches[0]["title"]
    assert "0ther0ne" in cells.text  # the reasons are listed on the page


def test_html_is_self_contained_and_sortable(three, tmp_path):
    page = write_html(build([three / "evals", three / "old"]), tmp_path / "p.html").read_text()
    assert "<script>" in page and "addEventListener(\"click\"" in page and "<svg" in page
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "") and "https://" not in page
    cells = CellCollector.parse(page)
    assert cells.rows == 4 and cells.headers[0]["text"] == "#"


def test_suite_hash_mismatch_flags_the_row(three):
    prov = provenance()
    prov["suite_hash"] = "0dd"
    write(three / "evals" / "zeta", "zeta", [entry("knn", "digits", {"acc1": 0.1}, "acc1")], prov)
    (flag,) = build([three / "evals"]).flags
    assert flag.kind == "suite" and flag.rows == ["zeta"] and "0dd" in flag.message and "mine" in flag.message


def test_collection_is_shown_and_different_task_sets_flagged(three):
    collection = {"name": "datacomp", "size": 38, "average": 0.51, "ran": 5, "missing": ["imagenet1k"]}
    write(three / "evals" / "alpha", "alpha", [entry("knn", "digits", {"acc1": 0.7}, "acc1")], provenance(),
          collection=collection)
    write(three / "evals" / "beta", "beta", [entry("knn", "digits", {"acc1": 0.8}, "acc1")], provenance(),
          collection={**collection, "ran": 6, "missing": []})
    board = build([three / "evals"])
    alpha = next(r for r in board.rows if r.model == "alpha")
    assert alpha.collection == "datacomp average 51.0% over 5 of 38"
    page = write_html(board, three / "b.html").read_text()
    assert "5 of 38 datasets" in page
    (flag,) = board.flags
    assert flag.kind == "collection" and "datacomp" in flag.message


def test_duplicate_model_names_get_their_folder(tmp_path):
    write(tmp_path / "runs" / "a" / "eval", "same", [entry("knn", "digits", {"acc1": 0.7})], provenance())
    write(tmp_path / "runs" / "b" / "eval", "same", [entry("knn", "digits", {"acc1": 0.8})], provenance())
    board = build([tmp_path / "runs" / "a", tmp_path / "runs" / "b" / "eval" / "results.json"])
    assert [r.label for r in board.rows] == ["same (b/eval)", "same (a/eval)"]


@pytest.mark.parametrize("content, says", [
    ("{not json", "not valid JSON (line 1"),
    ('{"model": "x", "tasks": [{"task": "knn"}]}', "not a transferlab results.json"),
    ('[1, 2]', "not a transferlab results.json"),
])
def test_bad_files_name_the_file(tmp_path, content, says):
    bad = tmp_path / "folder" / "results.json"
    bad.parent.mkdir()
    bad.write_text(content)
    with pytest.raises(UserError) as err:
        build([tmp_path / "folder"])
    assert says in str(err.value) and str(bad.resolve()) in str(err.value)


def test_paths_without_results(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError) as err:
        build([tmp_path / "empty"])
    assert f"{tmp_path / 'empty'} holds no results.json" in str(err.value)
    with pytest.raises(UserError, match="does not exist"):
        build([tmp_path / "nowhere"])
    with pytest.raises(UserError, match="No results.json"):
        build([])


def invoke(*args: str):
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, " ".join(result.output.split())  # rich wraps long lines


def test_cli_writes_three_files_and_warns(three, tmp_path):
    code, out = invoke("leaderboard", str(three / "evals"), str(three / "old"), "--out", str(tmp_path / "lb"),
                       "--sort", "rank")
    assert code == 0, out
    assert {p.name for p in (tmp_path / "lb").iterdir()} == {"leaderboard.csv", "leaderboard.md", "leaderboard.html"}
    assert "alpha" in out and "80.0" in out and "sorted by rank" in out
    assert "warning ⚠1:" in out and "no provenance" in out and str(three / "old" / "eval" / "results.json") in out


def test_cli_strict_fails_on_a_mismatch_and_passes_clean_results(three):
    code, out = invoke("leaderboard", *map(str, mismatched(three)), "--strict")
    assert code == 2 and "--strict" in out and "cifar10 (zeroshot_classification, linear_probe)" in out
    assert "fingerprints differ" in out
    assert "Traceback" not in out
    code, out = invoke("leaderboard", str(three / "evals" / "alpha"), str(three / "evals" / "beta"), "--strict")
    assert code == 0, out


def test_cli_bad_input_is_one_message(tmp_path):
    (tmp_path / "results.json").write_text("{")
    code, out = invoke("leaderboard", str(tmp_path))
    assert code == 2 and "results.json is not valid JSON" in out and "Traceback" not in out


class CellCollector(HTMLParser):
    """Header and body cells of the first table: class, data-v, title and text; and all text."""

    def __init__(self) -> None:
        super().__init__()
        self.headers: list[dict] = []
        self.cells: list[dict] = []
        self.rows = 0
        self.text = ""
        self._cell: dict | None = None
        self._tables = 0
        self._in_body = False

    @classmethod
    def parse(cls, page: str) -> CellCollector:
        parser = cls()
        parser.feed(page)
        return parser

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self._tables += tag == "table"
        if self._tables == 1 and tag in ("th", "td"):
            self._cell = {"class": attrs.get("class") or "", "v": attrs.get("data-v"), "title": attrs.get("title"),
                          "text": ""}
            (self.headers if tag == "th" else self.cells).append(self._cell)
        self.rows += self._tables == 1 and tag == "tr" and self._in_body
        self._in_body = self._in_body or (self._tables == 1 and tag == "tbody")

    def handle_endtag(self, tag):
        if tag in ("th", "td"):
            self._cell = None
        self._in_body = self._in_body and tag != "tbody"

    def handle_data(self, data):
        self.text += data
        if self._cell is not None:
            self._cell["text"] += data


def test_brute_force_ranks_match_scipy_on_ties():
    """The brute force itself: on every ordering of a column with ties it agrees with the textbook mean rank."""
    for values in itertools.permutations([0.5, 0.5, 0.7, 0.2]):
        table = {f"m{i}": {"c": v} for i, v in enumerate(values)}
        ranks = {m: r for m, (_, r) in brute_force(table).items()}
        assert sorted(ranks.values()) == [1, 2.5, 2.5, 4]


def test_terminal_tables_fit_the_width_and_keep_every_value(three):
    from rich.console import Console

    from transferlab.cli import _leaderboard_tables

    board = build([three / "evals", three / "old"])
    terminal = Console(width=64, record=True, file=io.StringIO())
    tables = _leaderboard_tables(board, 64)
    for table in tables:
        terminal.print(table)
    text = terminal.export_text()
    assert len(tables) > 1 and max(map(len, text.splitlines())) <= 64
    for row in board.rows:
        for value in row.values.values():
            if value is not None:
                assert f"{100 * value:.1f}" in text


def test_a_task_held_twice_is_flagged_and_the_first_used(tmp_path):
    write(tmp_path / "a", "a", [entry("knn", "digits", {"acc1": 0.7}, "acc1"),
                                entry("knn", "digits", {"acc1": 0.9}, "acc1", split="val")], provenance())
    board = build([tmp_path / "a"])
    assert board.rows[0].values == {"digits/knn": 0.7}
    (flag,) = board.flags
    assert flag.kind == "duplicate" and "digits/knn more than once" in flag.message and "split test" in flag.message
