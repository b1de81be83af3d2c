"""Tests for the Markdown model card and its replaceable results block."""

from __future__ import annotations

import math
import re

import pytest

from transferlab import fileio
from transferlab.errors import UserError
from transferlab.evaluate.model_card import END, START, md, write_model_card

SUMMARY = {"image tower": "vit-tiny", "text tower": "minilm-l6", "embed_dim": 256, "objective": "clip",
           "steps": 150, "data": ["mnist5k", "digits"], "lr": 5e-4}


def results(model: str = "vit-tiny", acc: float = 0.9731, tasks: list[dict] | None = None) -> dict:
    if tasks is None:
        tasks = [
            {"task": "zeroshot_classification", "dataset": "cifar10", "split": "test",
             "metrics": {"acc1": acc, "mean_per_class_recall": 0.97}, "seconds": 3.2},
            {"task": "linear_probe", "dataset": "cifar10", "split": "test",
             "metrics": {"acc1": 0.981, "weight_decay": 1.2345e-4}, "seconds": 11.0},
            {"task": "fewshot", "dataset": "cifar10", "split": "test",
             "metrics": {"ncm@1shot": 0.4567, "ncm@1shot_ci95": 0.0312, "ncm@4shot": 0.6,
                         "ncm@4shot_ci95": math.nan}, "seconds": 2.0},
            {"task": "clustering", "dataset": "cifar10", "split": "test",
             "metrics": {"nmi": 0.81234, "n_clusters": 10}, "seconds": 1.0},
        ]
    return {"model": model, "suite": "smoke", "created": "2024-05-01T12:00:00+00:00", "tasks": tasks}


def cells(line: str) -> list[str]:
    """A Markdown table row split on its unescaped pipes, as GitHub splits it."""
    return [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]


def table_rows(text: str) -> list[list[str]]:
    """The rows of the results table (header and separator left out)."""
    block = text[text.index(START):text.index(END)]
    lines = [line for line in block.splitlines() if line.startswith("|")]
    return [cells(line) for line in lines[2:]]


def test_new_card_has_title_facts_and_results(tmp_path):
    path = write_model_card(tmp_path / "run", results(), SUMMARY)
    assert path == tmp_path / "run" / "README.md"
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# vit-tiny\n") and text.endswith(END + "\n")
    assert text.index("## Model") < text.index(START) < text.index("## Evaluation results") < text.index(END)
    facts = [cells(line) for line in text[:text.index(START)].splitlines() if line.startswith("| ")]
    assert facts[0] == ["property", "value"]
    assert ["image tower", "vit-tiny"] in facts and ["embed_dim", "256"] in facts
    assert ["data", "mnist5k, digits"] in facts and ["lr", "0.0005"] in facts
    assert table_rows(text) == [
        ["cifar10", "test", "zeroshot_classification", "acc1", "97.3%"],
        ["cifar10", "test", "zeroshot_classification", "mean_per_class_recall", "97.0%"],
        ["cifar10", "test", "linear_probe", "acc1", "98.1%"],
        ["cifar10", "test", "linear_probe", "weight_decay", "0.0001234"],
        ["cifar10", "test", "fewshot", "ncm@1shot", "45.7% ± 3.1%"],  # the ci95 entry folds into its metric
        ["cifar10", "test", "fewshot", "ncm@4shot", "60.0%"],  # a nan half-width (one draw) is left out
        ["cifar10", "test", "clustering", "nmi", "0.8123"],
        ["cifar10", "test", "clustering", "n_clusters", "10"],
    ]


def test_card_without_summary_or_tasks(tmp_path):
    text = write_model_card(tmp_path, results(tasks=[])).read_text(encoding="utf-8")
    assert "## Model" not in text and "No tasks were evaluated." in text


def test_update_replaces_only_the_block_and_keeps_the_users_text(tmp_path):
    path = write_model_card(tmp_path, results(acc=0.5), SUMMARY)
    text = path.read_text(encoding="utf-8")
    edited = ("Intro the user wrote.\n\n" + text.replace("# vit-tiny", "# My model\n\nSee *notes*.")
              + "\n## Notes\n\nWritten by hand; no trailing newline")
    path.write_text(edited, encoding="utf-8")
    write_model_card(tmp_path, results(acc=0.75), {"objective": "siglip"})
    updated = path.read_text(encoding="utf-8")
    assert updated.count(START) == 1 and updated.count(END) == 1
    before, after = edited.split(START)[0], edited.split(END)[1]
    assert updated.startswith(before) and updated.endswith(after)
    assert "75.0%" in updated and "50.0%" not in updated
    assert "siglip" not in updated  # the facts are the user's once the card exists

    write_model_card(tmp_path, results(acc=0.75))
    assert path.read_text(encoding="utf-8") == updated  # idempotent


@pytest.mark.parametrize("existing", ["# Hand-written\n\nSome text.\n", "No trailing newline", ""])
def test_block_is_appended_when_markers_are_missing(tmp_path, existing):
    path = tmp_path / "README.md"
    path.write_text(existing, encoding="utf-8")
    write_model_card(tmp_path, results(), SUMMARY)
    text = path.read_text(encoding="utf-8")
    assert text.startswith(existing) and text.endswith(END + "\n") and text.count(START) == 1
    assert "## Model" not in text
    write_model_card(tmp_path, results())
    assert path.read_text(encoding="utf-8") == text  # a second run replaces, not appends


@pytest.mark.parametrize("stray", [START, END, END + "\n" + START])
def test_a_stray_marker_is_refused_and_the_file_left_alone(tmp_path, stray):
    path = tmp_path / "README.md"
    path.write_text(f"mine\n{stray}\nmore\n", encoding="utf-8")
    with pytest.raises(UserError, match="stray marker"):
        write_model_card(tmp_path, results())
    assert path.read_text(encoding="utf-8") == f"mine\n{stray}\nmore\n"


def test_pipes_and_markup_in_names_are_escaped(tmp_path):
    tasks = [{"task": "knn", "dataset": "a|b", "split": "te\nst",
              "metrics": {"acc|1": 0.5, "<img src=x>": 1.0, "_private_": 2.0, "$x$ *y* `z` [l](u) # &amp;": 3.0}}]
    text = write_model_card(tmp_path, results(model="m|<b>x</b>", tasks=tasks)).read_text(encoding="utf-8")
    assert text.startswith(r"# m\|\<b\>x\</b\>")
    rows = table_rows(text)
    assert all(len(row) == 5 for row in rows)
    assert rows[0] == [r"a\|b", "te st", "knn", r"acc\|1", "50.0%"]
    assert rows[1][3] == r"\<img src=x\>" and rows[2][3] == r"\_private\_"
    assert rows[3][3] == r"\$x\$ \*y\* \`z\` \[l\](u) \# \&amp;"
    assert re.findall(r"(?<!\\)<", text) == ["<", "<"]  # only the two markers open a tag
    assert md("mean_per_class_recall") == "mean_per_class_recall"  # inner underscores stay readable


def test_write_is_atomic(tmp_path, monkeypatch):
    path = write_model_card(tmp_path, results(acc=0.5))
    old = path.read_text(encoding="utf-8")

    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr(fileio.os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        write_model_card(tmp_path, results(acc=0.75))
    assert path.read_text(encoding="utf-8") == old and sorted(p.name for p in tmp_path.iterdir()) == ["README.md"]
