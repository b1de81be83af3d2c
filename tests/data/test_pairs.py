"""Text pairs: read from a table with clear errors, or built from the standard library's docstrings."""

import csv
import json

import pytest

from transferlab.config import TextPairSource
from transferlab.data.readers.sources import load_splits
from transferlab.data.readers.text_pairs import docstring_pairs, load_text_pairs
from transferlab.errors import UserError


def pairs_csv(path, rows):
    with path.open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    return path


def source(table, **options):
    return TextPairSource(source="text-pairs", table=table, **options)


def test_csv_and_jsonl_pairs_keep_their_order_and_strip_whitespace(tmp_path):
    path = pairs_csv(tmp_path / "p.csv", [["left", "right"], [" what is 2+2 ", "four"], ["capital of France", "Paris"]])
    data = load_text_pairs(source(path), "qa")
    assert data.left == ["what is 2+2", "capital of France"] and data.right == ["four", "Paris"]
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text("\n".join(json.dumps({"q": q, "a": a}) for q, a in [("x y", "z"), ("u", "v w")]) + "\n")
    data = load_text_pairs(source(jsonl, left_column="q", right_column="a"), "qa")
    assert (data.left, data.right) == (["x y", "u"], ["z", "v w"])


def test_a_missing_column_names_the_table_the_key_and_the_nearest_column(tmp_path):
    path = pairs_csv(tmp_path / "p.csv", [["question", "answer"], ["a", "b"]])
    with pytest.raises(UserError, match=r"p\.csv has no column 'left'.*datasets\.qa\.left_column"):
        load_text_pairs(source(path), "qa")
    with pytest.raises(UserError, match=r"no column 'answr'.*Did you mean 'answer'"):
        load_text_pairs(source(path, left_column="question", right_column="answr"), "qa")


def test_an_empty_side_stops_with_its_line_or_is_skipped_and_counted(tmp_path):
    path = pairs_csv(tmp_path / "p.csv", [["left", "right"], ["a", "b"], ["c", "  "], ["d", "e"]])
    with pytest.raises(UserError, match=r"p\.csv line 3: a pair needs one non-empty text on each side.*skip"):
        load_text_pairs(source(path), "qa")
    data = load_text_pairs(source(path, bad_samples="skip"), "qa")
    assert data.left == ["a", "d"] and data.report.skipped == {"empty text": 1} and data.report.kept == 2


def test_a_table_without_usable_pairs_is_an_error(tmp_path):
    path = pairs_csv(tmp_path / "p.csv", [["left", "right"], ["", "b"]])
    with pytest.raises(UserError, match=r"no usable text pairs.*empty text"):
        load_text_pairs(source(path, bad_samples="skip"), "qa")


def test_the_source_needs_a_table():
    with pytest.raises(ValueError, match="needs `table`"):
        TextPairSource(source="text-pairs")


def test_docstring_pairs_are_deterministic_distinct_and_substantial():
    first, second = docstring_pairs("doc"), docstring_pairs("doc")
    assert first.left == second.left and first.right == second.right
    assert len(first) > 500
    assert len(set(first.right)) == len(first)  # every right text once: each query has one true match
    pairs = list(zip(first.left, first.right, strict=True))
    assert all(len(left.split()) >= 3 and len(right.split()) >= 8 for left, right in pairs)
    assert all(not right.startswith(left) for left, right in pairs)  # the answer is not in the question


def test_splits_are_seeded_and_disjoint():
    spec = TextPairSource(source="docstrings", splits={"train": 0.7, "val": 0.1, "test": 0.2, "seed": 0})
    splits = load_splits("doc", spec, 28, 1)
    sizes = {name: len(split) for name, split in splits.items()}
    assert sum(sizes.values()) == len(docstring_pairs("doc")) and sizes["test"] > sizes["val"] > 0
    assert not set(splits["train"].right) & set(splits["test"].right)
    assert load_splits("doc", spec, 28, 1)["test"].left == splits["test"].left
