"""Reading image folders listed in CSV, TSV and JSONL tables: values, merging, labels, and every bad input."""

from __future__ import annotations

import csv
import json
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from transferlab.config import TableSource
from transferlab.data.readers.table import read_image_table
from transferlab.errors import UserError

RED, BLUE, GREEN = (255, 0, 0), (0, 0, 255), (0, 255, 0)


def image(path: Path, color=RED, size=(6, 4)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def table(path: Path, rows: list[list[str]], delimiter: str = ",") -> Path:
    with open(path, "w", newline="", encoding="utf-8") as file:
        csv.writer(file, delimiter=delimiter).writerows(rows)
    return path


def jsonl(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def spec(path: Path, **options) -> TableSource:
    options.setdefault("images", path.parent)
    return TableSource(source="table", table=path, **options)


def read(path: Path, size=4, channels=3, **options):
    return read_image_table(spec(path, **options), "mine", size, channels)


def test_csv_reads_images_and_merges_captions_of_the_same_image(tmp_path):
    image(tmp_path / "img" / "a.png", RED)
    image(tmp_path / "img" / "b.png", BLUE)
    rows = [["image", "caption"], ["img/a.png", " a red box "], ["img/b.png", "blue, with a comma"],
            ["./img/a.png", "second caption"]]
    data = read(table(tmp_path / "t.csv", rows))
    assert data.images.dtype == torch.uint8 and data.images.shape == (2, 3, 4, 4)
    assert data.images[0, :, 0, 0].tolist() == [255, 0, 0] and data.images[1, :, 0, 0].tolist() == [0, 0, 255]
    assert data.captions == [["a red box", "second caption"], ["blue, with a comma"]]
    assert data.labels is None and data.classnames is None
    assert data.report.kept == 2 and not data.report.skipped


def test_tsv_and_grey_images(tmp_path):
    image(tmp_path / "a.png", (200, 200, 200))
    data = read(table(tmp_path / "t.tsv", [["image", "caption"], ["a.png", "grey, square"]], "\t"), channels=1)
    assert data.images.shape == (1, 1, 4, 4) and data.captions == [["grey, square"]]


def test_integer_labels_are_ordered_numerically(tmp_path):
    for name in "abc":
        image(tmp_path / f"{name}.png")
    rows = [["image", "caption", "digit"], ["a.png", "x", "7"], ["b.png", "y", "10"], ["c.png", "z", "3"]]
    data = read(table(tmp_path / "t.csv", rows), label_column="digit")
    assert data.classnames == ["3", "7", "10"]
    assert data.labels.tolist() == [1, 2, 0] and data.labels.dtype == torch.long


def test_templates_make_captions_from_string_labels(tmp_path):
    image(tmp_path / "a.png")
    image(tmp_path / "b.png")
    rows = [["image", "label"], ["a.png", "dog"], ["b.png", "cat"]]
    # the default caption column 'caption' is absent, which is fine when templates can make captions
    data = read(table(tmp_path / "t.csv", rows), label_column="label", templates=["a {}.", "one {}"])
    assert data.classnames == ["cat", "dog"] and data.labels.tolist() == [1, 0]
    assert data.captions == [["a dog.", "one dog"], ["a cat.", "one cat"]]


def test_jsonl_captions_may_be_strings_or_lists(tmp_path):
    image(tmp_path / "a.png")
    image(tmp_path / "b.png", GREEN)
    records = [{"image": "a.png", "caption": ["one", " two ", ""], "label": 1},
               {"image": "b.png", "caption": "three", "label": 0}]
    data = read(jsonl(tmp_path / "t.jsonl", records), label_column="label")
    assert data.captions == [["one", "two"], ["three"]]
    assert data.classnames == ["0", "1"] and data.labels.tolist() == [1, 0]


def test_images_root_defaults_to_the_tables_folder_and_long_captions_are_truncated(tmp_path):
    image(tmp_path / "a.png")
    data = read(table(tmp_path / "t.csv", [["image", "caption"], ["a.png", "x" * 20_000]]), images=None)
    assert data.captions == [["x" * 10_000]]


def test_missing_table_and_unsupported_extension(tmp_path):
    with pytest.raises(UserError, match=r"nope\.csv.*does not exist"):
        read(tmp_path / "nope.csv")
    (tmp_path / "t.xlsx").write_text("x")
    with pytest.raises(UserError, match=r"\.csv, \.tsv or \.jsonl"):
        read(tmp_path / "t.xlsx")


@pytest.mark.parametrize("header, options, missing, suggestion, key", [
    (["img", "caption"], {}, "image", "img", "image_column"),
    (["image", "captoin"], {}, "caption", "captoin", "caption_column"),
    (["image", "caption", "labels"], {"label_column": "label"}, "label", "labels", "label_column"),
])
def test_missing_columns_are_named_with_a_suggestion(tmp_path, header, options, missing, suggestion, key):
    path = table(tmp_path / "t.csv", [header, ["a.png", "x", "y"][: len(header)]])
    with pytest.raises(UserError) as err:
        read(path, **options)
    message = str(err.value)
    assert f"no column '{missing}'" in message and str(path) in message
    assert f"Did you mean '{suggestion}'" in message and ", ".join(header) in message
    assert f"datasets.mine.{key}" in message


def test_jsonl_fields_missing_everywhere_or_in_one_line(tmp_path):
    image(tmp_path / "a.png")
    with pytest.raises(UserError, match=r"no field 'image'.*Did you mean 'images'.*datasets\.mine\.image_column"):
        read(jsonl(tmp_path / "t.jsonl", [{"images": "a.png", "caption": "x"}]))
    path = jsonl(tmp_path / "u.jsonl", [{"image": "a.png", "caption": "x"}, {"caption": "y"}])
    with pytest.raises(UserError, match=r"u\.jsonl line 2: no image path in 'image'"):
        read(path)
    with open(path, "a") as file:
        file.write("[1, 2]\n")
    with pytest.raises(UserError, match=r"u\.jsonl line 3: the line holds a JSON list, not an object"):
        read(path)
    assert read(path, bad_samples="skip").report.skipped == {"missing image path": 1, "invalid json": 1}


def test_captions_or_templates_are_needed(tmp_path):
    path = table(tmp_path / "t.csv", [["image", "label"], ["a.png", "dog"]])
    with pytest.raises(UserError, match="caption_column.*templates"):
        read(path, caption_column=None, label_column="label")


def test_invalid_json_line(tmp_path):
    image(tmp_path / "a.png")
    path = tmp_path / "t.jsonl"
    path.write_text('{"image": "a.png", "caption": "ok"}\n{"image": "a.png", "capt\n', encoding="utf-8")
    with pytest.raises(UserError, match=r"t\.jsonl line 2: the line is not valid JSON.*bad_samples: skip"):
        read(path)
    data = read(path, bad_samples="skip")
    assert data.report.skipped == {"invalid json": 1} and data.report.kept == 1


def test_invalid_utf8_names_file_and_line(tmp_path):
    path = tmp_path / "t.csv"
    path.write_bytes(b"image,caption\na.png,fine\nb.png,caf\xe9\n")
    with pytest.raises(UserError, match=r"t\.csv line 3 is not valid UTF-8.*Re-save"):
        read(path, bad_samples="skip")


def _missing(path):
    pass


def _empty(path):
    path.write_bytes(b"")


def _truncated(path):
    image(path, size=(64, 64))
    path.write_bytes(path.read_bytes()[:60])


def _corrupt(path):
    path.write_bytes(b"\x89PNG not really an image")


@pytest.mark.parametrize("make, reason", [(_missing, "missing image"), (_empty, "empty image"),
                                          (_truncated, "truncated image"), (_corrupt, "undecodable image")])
def test_bad_images_stop_or_are_skipped(tmp_path, make, reason):
    image(tmp_path / "good.png")
    make(tmp_path / "bad.png")
    path = table(tmp_path / "t.csv", [["image", "caption"], ["good.png", "ok"], ["bad.png", "broken"]])
    with pytest.raises(UserError) as err:
        read(path)
    message = str(err.value)
    assert f"{path} line 3" in message and "'bad.png'" in message and "datasets.mine.bad_samples: skip" in message
    data = read(path, bad_samples="skip")
    assert data.report.kept == 1 and data.report.skipped == {reason: 1} and data.captions == [["ok"]]


def test_empty_caption(tmp_path):
    image(tmp_path / "a.png")
    image(tmp_path / "b.png")
    path = table(tmp_path / "t.csv", [["image", "caption"], ["a.png", "   "], ["b.png", "ok"]])
    with pytest.raises(UserError, match=r"t\.csv line 2: the caption of image 'a\.png'.* is empty"):
        read(path)
    assert read(path, bad_samples="skip").report.skipped == {"empty caption": 1}


def test_malformed_rows_and_conflicting_labels(tmp_path):
    image(tmp_path / "a.png")
    rows = [["image", "caption", "label"], ["a.png", "x", "cat"], ["a.png", "unquoted", "comma", "dog"],
            ["a.png", "y", "dog"]]
    path = table(tmp_path / "t.csv", rows)
    with pytest.raises(UserError, match=r"line 3: the row has 4 fields but the header has 3; quote"):
        read(path, label_column="label")
    data = read(path, label_column="label", bad_samples="skip")
    assert data.report.skipped == {"malformed row": 1, "conflicting labels": 1} and data.captions == [["x"]]


def test_paths_outside_the_image_folder_are_never_read(tmp_path):
    root = tmp_path / "root"
    image(root / "ok.png")
    outside = image(tmp_path / "secret.png")
    (root / "link.png").symlink_to(outside)
    rows = [["image", "caption"], ["ok.png", "fine"], ["../secret.png", "escape"], [str(outside), "absolute"],
            ["link.png", "symlink out"]]
    path = table(root / "t.csv", rows)
    with pytest.raises(UserError, match=r"line 3: image path '\.\./secret\.png' is outside the image folder"):
        read(path)
    data = read(path, bad_samples="skip")
    assert data.captions == [["fine"]] and data.report.skipped == {"path outside the image folder": 3}


def test_nothing_usable_says_what_was_skipped(tmp_path):
    path = table(tmp_path / "t.csv", [["image", "caption"], ["a.png", "x"], ["b.png", "y"]])
    with pytest.raises(UserError, match=r"no usable samples.*2 rows were skipped \(2 missing image\)"):
        read(path, bad_samples="skip")
    with pytest.raises(UserError, match="holds no samples"):
        read(table(tmp_path / "header.csv", [["image", "caption"]]))
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(UserError, match=r"empty\.csv is empty"):
        read(tmp_path / "empty.csv")


cells = st.text(st.characters(codec="utf-8"), max_size=12) | st.sampled_from(["a.png", "../a.png", "/a.png", ""])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(st.lists(cells, min_size=1, max_size=4), max_size=5), skip=st.booleans())
def test_any_csv_gives_data_or_a_user_error(rows, skip):
    with tempfile.TemporaryDirectory() as folder:
        image(Path(folder) / "a.png")
        path = table(Path(folder) / "t.csv", [["image", "caption"], *rows])
        try:
            data = read(path, bad_samples="skip" if skip else "error")
        except UserError:
            return
        assert len(data) == 1 and all(c and c == c.strip() for c in data.captions[0])


def test_a_collection_too_large_for_memory_is_refused_before_decoding(tmp_path, monkeypatch):
    from transferlab.data import memory

    monkeypatch.setattr(memory, "free_memory", lambda: 1000)  # bytes
    Image.new("L", (8, 8)).save(tmp_path / "a.png")
    (tmp_path / "t.csv").write_text("image,caption\na.png,x\n")
    spec = TableSource(source="table", table=tmp_path / "t.csv", images=tmp_path)
    with pytest.raises(UserError, match="free memory.*stream: true"):
        read_image_table(spec, "big", size=28, channels=3)
