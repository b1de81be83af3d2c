"""The study's two published tables turned into a runs table (on made-up tables in the same format), and every way
they can be broken named."""

from __future__ import annotations

import csv
import json

import pytest
from typer.testing import CliRunner

from tests.predict.study_tables import GMACS, RUNS, SAMPLES, error, model_name, write_study
from transferlab.cli import app
from transferlab.errors import UserError
from transferlab.predict.openclip_study import load_study, main
from transferlab.predict.runs_table import load_runs
from transferlab.predict.study_converter import write_runs


def test_one_run_per_row_with_compute_and_every_metric(tmp_path):
    runs = load_study(write_study(tmp_path / "study", datas=("80M", "2B")))
    assert len(runs) == 2 * len(RUNS)  # OpenAI's row is not one of the study's runs
    first = runs[0]
    arch, seen = RUNS[0]
    assert first["run"] == model_name(arch, seen, "80M").removesuffix(".pt") and first["data"] == "LAION-80M"
    assert first["batch"] == 256 * 344 and first["lr"] == 0.001
    assert first["gmacs_total"] == pytest.approx(GMACS[arch] * SAMPLES[seen])
    assert first["flops"] == pytest.approx(6e9 * GMACS[arch] * SAMPLES[seen])  # 3 passes x 2 FLOPs per MAC
    assert first["zeroshot_classification/imagenet1k/acc1"] == pytest.approx(1 - error("imagenet1k",
                                                                                       first["gmacs_total"]))
    assert first["retrieval/mscoco_captions/image_retrieval_recall@5"] == pytest.approx(
        1 - error("mscoco_captions", first["gmacs_total"]))
    assert "retrieval/mscoco_captions/acc1" not in first  # empty cells are not metrics


def test_the_written_table_is_read_back_and_predicted_without_flags(tmp_path):
    runs = [run for run in load_study(write_study(tmp_path / "study")) if run["data"] == "LAION-2B"]
    path = write_runs(runs, tmp_path / "runs.csv")
    assert load_runs(path) == runs
    result = CliRunner().invoke(app, ["predict", str(path), "--target", "zeroshot_classification/vtab+/acc1",
                                      "--holdout", "2", "--bootstrap", "20", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "law: loglog" in result.output or "law: power" in result.output  # said, with its reason
    record = json.loads((tmp_path / "out" / "predict.json").read_text())
    assert record["law_choice"]["scores"] and len(record["held_out"]) == 2


def test_the_command_line_converter(tmp_path, capsys):
    main([str(write_study(tmp_path / "study", datas=("80M", "2B"))), str(tmp_path / "2b.csv"), "--data", "LAION-2B"])
    assert f"{len(RUNS)} runs" in capsys.readouterr().out
    with open(tmp_path / "2b.csv") as handle:
        assert {row["data"] for row in csv.DictReader(handle)} == {"LAION-2B"}
    with pytest.raises(SystemExit) as caught:
        main([str(tmp_path / "nowhere"), str(tmp_path / "x.csv")])
    assert caught.value.code == 2 and "git clone" in capsys.readouterr().err


def edit(path, line, old, new):
    lines = path.read_text().split("\n")
    assert old in lines[line - 1], lines[line - 1]
    lines[line - 1] = lines[line - 1].replace(old, new, 1)
    path.write_text("\n".join(lines))


@pytest.mark.parametrize(("file", "change", "message"), [
    ("zeroshot_results.csv", ("line", 3, ",0.", ",zero."), r"Line 3 of .*zeroshot_results.csv has 'zero"),
    ("zeroshot_results.csv", ("header", "gmacs_total", "gmacs_sum"), r"has no column 'gmacs_total'"),
    ("zeroshot_results.csv", ("duplicate", 2), r"Lines 2 and \d+ of .* both hold model"),
    ("zeroshot_results.csv", ("line", 2, "LAION-2B", "LAION-400M"), r"says model .* was trained on 'LAION-400M'"),
    ("zeroshot_results.csv", ("line", 2, "zeroshot_classification", "linear_probe"), "has task 'linear_probe'"),
    ("trained_models_info.csv", ("duplicate", 2), r"Line \d+ of .*trained_models_info.csv names model .* second"),
    ("trained_models_info.csv", ("line", 2, ",344,", ",many,"), r"has 'many' in column 'local_bs'"),
])
def test_broken_tables_are_named(tmp_path, file, change, message):
    folder = write_study(tmp_path / "study")
    path = folder / file
    if change[0] == "line":
        edit(path, *change[1:])
    elif change[0] == "header":
        edit(path, 1, *change[1:])
    else:
        lines = path.read_text().rstrip("\n").split("\n")
        path.write_text("\n".join([*lines, lines[change[1] - 1]]) + "\n")
    with pytest.raises(UserError, match=message):
        load_study(folder)


def test_a_model_without_results_is_named(tmp_path):
    folder = write_study(tmp_path / "study")
    path = folder / "zeroshot_results.csv"
    name = model_name(*RUNS[0])
    path.write_text("\n".join(line for line in path.read_text().split("\n") if name not in line))
    with pytest.raises(UserError, match=f"no zero-shot result for model.*{name.removesuffix('.pt')}"):
        load_study(folder)
