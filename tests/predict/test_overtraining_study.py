"""Gadre et al.'s published model and evaluation JSONs turned into a runs table: on made-up files in the same format
(values worked out by hand, every way they can be broken named), and on the shipped table, against numbers read by
hand from the study's own files (tests/predict/published/gadre2024/README.md)."""

from __future__ import annotations

import csv
import json
import math
import re
import shutil
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.predict.lm_study_tables import C4_LOSS, OTHER_ACC, RUNS, SUBSET_ACC, edit_json, run_name, write_study
from transferlab.cli import app
from transferlab.errors import UserError
from transferlab.predict.overtraining_study import SUBSET, TASKS, load_study, main
from transferlab.predict.runs_table import load_runs
from transferlab.predict.study_converter import write_runs

PUBLISHED = Path(__file__).parent / "published" / "gadre2024"
RPJ_SMALL = run_name(*RUNS[2][:2], RUNS[2][4])  # rpj, d=96_l=8_h=4, M = 20


def test_the_study_task_lists():
    assert len(set(TASKS)) == len(TASKS) == 46 and len(set(SUBSET)) == len(SUBSET) == 17
    assert set(SUBSET) < set(TASKS) and {"hellaswag", "mmlu", "winogrande", "squad"} <= set(TASKS)
    assert "mmlu" not in SUBSET and {"hellaswag", "piqa", "copa"} <= set(SUBSET)


def test_one_run_per_model_with_compute_losses_and_accuracies(tmp_path):
    runs = load_study(write_study(tmp_path / "study"))
    assert [run["run"] for run in runs] == [run_name("c4_original", "open_lm_1b", 0.25), RPJ_SMALL,
                                            run_name("rpj", "d=96_l=8_h=4", 4.0)]  # by data set, then 6ND
    first, small = runs[0], runs[1]
    assert list(first)[:8] == ["run", "data", "model", "params", "samples", "multiplier", "flops", "loss"]
    assert first["data"] == "c4_original" and first["model"] == "open_lm_1b" and small["model"] == "d=96_l=8_h=4"
    assert first["params"] == 1e9 and first["samples"] == 5e9 and first["flops"] == 6 * 1e9 * 5e9
    assert first["multiplier"] == 5.0 and small["multiplier"] == 20.0 and runs[2]["multiplier"] == 80.0
    assert small["flops"] == 6 * 1e7 * 2e8
    assert first["loss"] == C4_LOSS  # the c4_val entry, not the first one (openlm)
    assert (first["loss/openlm"], first["loss/paloma_ptb"], first["loss/val_de-en_100"]) == (4.5, 5.5, 6.5)
    assert "loss/c4_val" not in first
    assert first["icl/hellaswag/acc1"] == SUBSET_ACC and first["icl/mmlu/acc1"] == OTHER_ACC
    assert first["icl/avg17/acc1"] == pytest.approx(SUBSET_ACC)
    assert first["icl/avg46/acc1"] == pytest.approx((17 * SUBSET_ACC + 29 * OTHER_ACC) / 46)
    assert "icl/extra_task/acc1" not in first  # not one of the study's 46 tasks (its accuracy, 1, is in no mean)
    assert len([name for name in first if name.startswith("icl/")]) == 46 + 2


def test_the_command_line_converter_and_reading_back(tmp_path, capsys):
    folder = write_study(tmp_path / "study")
    main([str(folder), str(tmp_path / "rpj.csv"), "--data", "rpj"])
    assert "2 runs" in capsys.readouterr().out
    with open(tmp_path / "rpj.csv") as handle:
        assert {row["data"] for row in csv.DictReader(handle)} == {"rpj"}
    runs = load_study(folder)
    assert load_runs(write_runs(runs, tmp_path / "all.csv")) == runs
    with pytest.raises(SystemExit) as caught:
        main([str(tmp_path / "nowhere"), str(tmp_path / "x.csv")])
    assert caught.value.code == 2 and "git clone" in capsys.readouterr().err


def _model(folder, name=RPJ_SMALL):
    return folder / "exp_data/models" / f"{name}.json"


def _evaluation(folder, name=RPJ_SMALL):
    return folder / "exp_data/evals" / f"evaluation_{name}_heavy.json"


def _drop_evaluation(folder):
    _evaluation(folder).unlink()


def _drop_task(task):
    return lambda folder: edit_json(_evaluation(folder), lambda value: value["eval_metrics"]["icl"].pop(task))


def _rename_c4_val(folder):
    edit_json(_model(folder), lambda value: value["results"][1]["val_data"].__setitem__(0, "eval_data/c4_test/0.tar"))


def _set_loss(loss):
    return lambda folder: edit_json(_model(folder), lambda value: value["results"][1].__setitem__("loss", loss))


def _set_accuracy(folder):
    edit_json(_evaluation(folder), lambda value: value["eval_metrics"]["icl"].__setitem__("boolq", math.inf))


def _set_params(folder):
    edit_json(_model(folder), lambda value: value["hyperparameters"].__setitem__("params", "10M"))


def _drop_tokens(folder):
    edit_json(_model(folder), lambda value: value["hyperparameters"].pop("tokens"))


def _duplicate(folder):
    shutil.copy(_model(folder), _model(folder, "zz-copy"))
    shutil.copy(_evaluation(folder), _evaluation(folder, "zz-copy"))


def _cut_short(folder):
    _model(folder).write_text(_model(folder).read_text()[:100])


@pytest.mark.parametrize(("change", "message"), [
    (_drop_evaluation, rf"{re.escape(f'evaluation_{RPJ_SMALL}_heavy.json')} does not exist"),
    (_drop_task("mmlu"), rf"{re.escape(f'evaluation_{RPJ_SMALL}_heavy.json')} has no accuracy for task 'mmlu' "
                         r"\(key 'eval_metrics.icl.mmlu'\), one of the 46 the study"),
    (_drop_task("hellaswag"), r"_heavy.json has no accuracy for task 'hellaswag' .* of the 17-task subset"),
    (_rename_c4_val, rf"{re.escape(RPJ_SMALL)}.json has no entry in 'results' whose val_data is in a 'c4_val'"),
    (_set_loss(math.nan), rf"Key 'results\[1\].loss' of .*{re.escape(RPJ_SMALL)}.json is nan, which must be a finite"),
    (_set_loss([3.5]), r"Key 'results\[1\].loss' of .* is \[3.5\], which must be a finite"),
    (_set_accuracy, r"Key 'eval_metrics.icl.boolq' of .*_heavy.json is inf, which must be a finite"),
    (_set_params, r"Key 'hyperparameters.params' of .* is '10M', which must be a finite"),
    (_drop_tokens, rf"{re.escape(RPJ_SMALL)}.json has no key 'hyperparameters.tokens'"),
    (_duplicate, rf"{re.escape(RPJ_SMALL)}.json and .*zz-copy.json both have name '{re.escape(RPJ_SMALL)}'"),
    (_cut_short, rf"{re.escape(RPJ_SMALL)}.json is not valid JSON"),
])
def test_broken_files_are_named(tmp_path, change, message):
    folder = write_study(tmp_path / "study")
    change(folder)
    with pytest.raises(UserError, match=message):
        load_study(folder)


def test_a_folder_without_the_study_is_named(tmp_path):
    with pytest.raises(UserError, match=r"exp_data/models holds no model JSON files.*git clone"):
        load_study(tmp_path)


# --- the shipped table ----------------------------------------------------------------------------------------------
# Read by hand from the study's exp_data at commit a003c49 (models/<run>.json, evals/evaluation_<run>_heavy.json).
RPJ_7B_SUBSET = {  # eval_metrics.icl of rpj-open_lm_7b-1.0 on the 17 tasks of the study's SUBSET
    "bigbench_operators": 0.20000000298023224, "pubmed_qa_labeled": 0.36800000071525574,
    "hellaswag_zeroshot": 0.6442939639091492, "boolq": 0.45137614011764526, "arc_easy": 0.6809764504432678,
    "coqa": 0.3770512342453003, "bigbench_dyck_languages": 0.31200000643730164, "lambada_openai": 0.6611682772636414,
    "bigbench_novel_concepts": 0.46875, "winograd": 0.8388278484344482, "bigbench_cs_algorithms": 0.459090918302536,
    "commonsense_qa": 0.1867321878671646, "bigbench_qa_wikidata": 0.6821514964103699, "hellaswag": 0.6522604823112488,
    "copa": 0.7599999904632568, "squad": 0.47398295998573303, "piqa": 0.7655059695243835}


@pytest.fixture(scope="module")
def published():
    return {run["run"]: run for run in load_runs(PUBLISHED / "runs.csv")}


def test_the_shipped_table_holds_every_run_in_order(published):
    assert len(published) == 104
    assert Counter(run["data"] for run in published.values()) == {"c4_original": 34, "rpj": 35, "rw_original": 35}
    runs = list(published.values())
    assert [(run["data"], run["flops"]) for run in runs] == sorted((run["data"], run["flops"]) for run in runs)
    assert Counter(run["model"] for run in runs)["open_lm_7b"] == 3
    assert all(not any(value is None for value in run.values()) for run in runs)  # every run has every column


@pytest.mark.parametrize(("name", "expected"), [
    ("c4_original-d=1024_l=24_h=8-0.25", {
        "data": "c4_original", "model": "d=1024_l=24_h=8", "params": 411616256, "samples": 2058081280,
        "multiplier": 5, "loss": 3.5279492850157737, "loss/val_de-en_100": 4.509730387944728,
        "icl/hellaswag/acc1": 0.28131845593452454, "icl/mmlu/acc1": 0.23942957870792925}),
    ("rpj-open_lm_7b-1.0", {
        "data": "rpj", "model": "open_lm_7b", "params": 6889410560, "samples": 137788211200, "multiplier": 20,
        "loss": 2.424993099368689, "loss/paloma_redpajama": 1.8855012226469663,
        "icl/hellaswag/acc1": 0.6522604823112488, "icl/mmlu/acc1": 0.25458545878268124}),
    ("rw_original-open_lm_1b-16.0", {
        "data": "rw_original", "model": "open_lm_1b", "params": 1439795200, "samples": 460734464000,
        "multiplier": 320, "loss": 2.531392897965929, "loss/openlm": 2.2654811163743336,
        "icl/hellaswag/acc1": 0.6784505248069763, "icl/mmlu/acc1": 0.2718183914558929}),
])
def test_the_shipped_table_has_the_studys_numbers(published, name, expected):
    run = published[name]
    texts = {key: value for key, value in expected.items() if isinstance(value, str)}
    numbers = {key: value for key, value in expected.items() if key not in texts}
    assert {key: run[key] for key in texts} == texts
    assert {key: run[key] for key in numbers} == pytest.approx(numbers, rel=1e-12)
    assert run["flops"] == pytest.approx(6 * expected["params"] * expected["samples"], rel=1e-12)


def test_the_shipped_average_is_the_studys_error(published):
    run = published["rpj-open_lm_7b-1.0"]
    assert {key: run[f"icl/{key}/acc1"] for key in RPJ_7B_SUBSET} == pytest.approx(RPJ_7B_SUBSET, rel=1e-12)
    by_hand = sum(1 - accuracy for accuracy in RPJ_7B_SUBSET.values()) / 17  # the study's err_avg_subset
    assert 1 - run["icl/avg17/acc1"] == pytest.approx(by_hand, rel=1e-12)
    assert by_hand == pytest.approx(0.47163718, abs=1e-8)


def test_predict_fits_one_series_of_the_shipped_table(tmp_path):
    """--where keeps one training data set (the table holds three), as the study fits them."""
    result = CliRunner().invoke(app, ["predict", str(PUBLISHED / "runs.csv"), "--target", "icl/avg17/acc1",
                                      "--where", "data=rpj", "--holdout", "2", "--bootstrap", "0",
                                      "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "law: chain" in result.output  # params, samples and loss: the study's own loss-then-error chain
    record = json.loads((tmp_path / "out" / "predict.json").read_text())
    assert [row["run"] for row in record["held_out"]] == ["rpj-open_lm_7b-1.0", "rpj-open_lm_1b-32.0"]
    assert record["runs_fitted"] == 33 and record["where"] == ["data=rpj"]


def test_the_license_ships_beside_the_table():
    text = (PUBLISHED / "LICENSE.txt").read_text()
    assert text.startswith("MIT License") and "Copyright (c) 2024 mlfoundations" in text
