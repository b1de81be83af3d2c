"""`transferlab predict` on a runs table generated from known laws: held-out large runs predicted."""

import json
import re

import numpy as np
import pytest
from typer.testing import CliRunner

from transferlab.cli import app
from transferlab.errors import UserError
from transferlab.predict.runs_table import select_runs

E, A_COEF, B_COEF, ETA = 1.8, 40.0, 25.0, 0.12  # L(C, M) = E + (a M^η + b M^−η) C^−η
EPS, K, GAMMA = 0.9, 5.0, 0.5  # Err(L) = ε − k exp(−γ L): accuracy 0.25 to 0.7 over the grid


def write_runs(path, noise=0.003, seed=0):
    generator = np.random.default_rng(seed)
    lines = []
    for params in (1e4, 3e4, 1e5, 3e5):
        for multiplier in (5, 20, 80):
            samples = params * multiplier
            compute = 6 * params * samples
            loss = E + (A_COEF * multiplier ** ETA + B_COEF * multiplier ** -ETA) * compute ** -ETA
            loss *= np.exp(noise * generator.standard_normal())
            error = (EPS - K * np.exp(-GAMMA * loss)) * np.exp(noise * generator.standard_normal())
            lines.append({"run": f"n{params:g}-m{multiplier}", "params": params, "samples": samples,
                          "flops": compute, "loss": loss, "linear_probe/digits/acc1": 1 - error})
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return lines


def test_chain_predicts_the_held_out_largest_runs(tmp_path):
    lines = write_runs(tmp_path / "runs.jsonl")
    result = CliRunner().invoke(app, ["predict", str(tmp_path / "runs.jsonl"), "--target", "linear_probe/digits/acc1",
                                      "--holdout", "2", "--bootstrap", "50", "--at", "1e6,1e8",
                                      "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "out" / "predict.json").read_text())
    assert record["law"] == "chain" and record["fitted_as"] == "error" and record["runs_fitted"] == 10
    largest = sorted(lines, key=lambda line: line["flops"])[-2:]
    assert [row["run"] for row in record["held_out"]] == [line["run"] for line in largest]
    for row, line in zip(record["held_out"], largest, strict=True):
        assert row["true"] == line["linear_probe/digits/acc1"]
        assert row["relative_error"] < 0.02  # measured: 0.002 and 0.007, at 2.25x and 9x beyond the fitted compute
        assert row["low"] <= row["true"] <= row["high"] and row["extrapolation"] > 1
    assert record["warnings"] and "beyond" in record["warnings"][0]  # extrapolation is said, not silent
    assert record["at"][0]["run"] == "params=1e+06, samples=1e+08"
    assert (tmp_path / "out" / "fit.png").stat().st_size > 1000
    assert set(record["fit"]) == {"loss", "error"}


def test_power_law_of_the_error_in_compute(tmp_path):
    write_runs(tmp_path / "runs.jsonl")
    result = CliRunner().invoke(app, ["predict", str(tmp_path / "runs.jsonl"), "--target", "linear_probe/digits/acc1",
                                      "--law", "power", "--bootstrap", "20", "--at", "1e13",
                                      "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "out" / "predict.json").read_text())
    assert set(record["fit"]) == {"power"} and record["fit"]["power"]["fitted_range"]["flops"][0] > 0
    assert 0 < record["at"][0]["predicted"] < 1


@pytest.mark.parametrize("args, message", [
    (["--target", "zeroshot/digits/acc1"], "zeroshot/digits/acc1"),
    (["--target", "loss", "--holdout", "12"], "must leave runs to fit"),
    (["--target", "loss", "--at", "1e6"], "params,samples"),
    (["--target", "linear_probe/digits/acc1", "--law", "overtraining"], "use --target loss"),
    (["--target", "loss", "--law", "cubic"], "--law must be one of"),
])
def test_bad_requests_say_what_to_do(tmp_path, args, message):
    write_runs(tmp_path / "runs.jsonl")
    result = CliRunner().invoke(app, ["predict", str(tmp_path / "runs.jsonl"), *args, "--bootstrap", "5",
                                      "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())


def write_compute_table(path, floor=0.0, noise=0.01, seed=0, runs=8):
    """A published study's kind of table: run, flops and an accuracy, no params, samples or loss. The error is
    floor + 30·(flops/1e18)^-0.3 times log-normal noise."""
    generator = np.random.default_rng(seed)
    flops = np.geomspace(1e18, 3e20, runs)
    error = (floor + 0.6 * (flops / 1e18) ** -0.3) * np.exp(noise * generator.standard_normal(runs))
    lines = ["run,flops,zeroshot/imagenet1k/acc1"] + [f"r{i},{f:.6g},{1 - e:.6f}" for i, (f, e)
                                                      in enumerate(zip(flops, error, strict=True))]
    path.write_text("\n".join(lines) + "\n")
    return flops, 1 - error


def test_a_compute_only_table_is_fitted_without_flags_and_says_which_law_and_why(tmp_path):
    """A floor of 0.3 under the error bends the curve: the saturating law predicts the largest runs better."""
    flops, accuracy = write_compute_table(tmp_path / "runs.csv", floor=0.3)
    result = CliRunner().invoke(app, ["predict", str(tmp_path / "runs.csv"), "--target", "zeroshot/imagenet1k/acc1",
                                      "--holdout", "2", "--bootstrap", "20", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "out" / "predict.json").read_text())
    choice = record["law_choice"]
    assert record["law"] == choice["law"] == "power" and set(record["fit"]) == {"power"}
    assert "no params, samples and loss" in choice["rule"] and choice["folds"] == 2
    assert choice["scores"]["power"] < choice["scores"]["loglog"]
    assert "law: power — power predicted the largest runs best" in " ".join(result.output.split())
    for row, true in zip(record["held_out"], accuracy[-2:], strict=True):
        assert row["true"] == pytest.approx(true, abs=1e-6) and row["relative_error"] < 0.02
        assert row["low"] < row["predicted"] < row["high"]


def test_a_straight_log_log_line_keeps_the_simpler_law(tmp_path):
    write_compute_table(tmp_path / "runs.csv", floor=0.0)
    result = CliRunner().invoke(app, ["predict", str(tmp_path / "runs.csv"), "--target", "zeroshot/imagenet1k/acc1",
                                      "--bootstrap", "0", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "out" / "predict.json").read_text())
    assert record["law"] == "loglog" and record["fit"]["loglog"]["params"]["alpha"]["estimate"] == pytest.approx(
        0.3, abs=0.03)


@pytest.mark.parametrize("edit, message", [
    (lambda lines: lines[:2], "leaves 1 run to fit"),
    (lambda lines: [lines[0].replace("flops", "compute"), *lines[1:]], "has no column 'flops'"),
    (lambda lines: [*lines, lines[3]], "Runs 3 and 9 of the runs table .* are both named 'r2'"),
    (lambda lines: [lines[0], *(line.split(",", 1)[1] for line in lines[1:4]), *(line.split(",", 1)[1]
                                                                              for line in lines[1:])],
     None),  # without names, identical rows
    (lambda lines: [*lines[:4], "r3,4e19,nan", *lines[5:]], r"Run 4 \('r3'\) .* has nan in column"),
    (lambda lines: [*lines[:4], "r3,4e19,", *lines[5:]], r"Run 4 \('r3'\) .* has no value in column"),
    (lambda lines: [*lines[:4], "r3,4e19,1.0", *lines[5:]], r"Run 4 \('r3'\) .* = 1; it must be a fraction"),
    (lambda lines: [*lines[:4], "r3,4e19,63.5", *lines[5:]], "a percentage must be divided by 100"),
    (lambda lines: [*lines[:4], "r3,0,0.5", *lines[5:]], r"Run 4 \('r3'\) .* has flops = 0"),
])
def test_malformed_tables_name_the_run(tmp_path, edit, message):
    write_compute_table(tmp_path / "runs.csv")
    lines = (tmp_path / "runs.csv").read_text().strip().split("\n")
    lines = edit(lines)
    if message is None:  # rows 1-3 (no run column) repeated: the first repeat is data row 4
        lines = ["flops,zeroshot/imagenet1k/acc1", *lines[1:]]
        message = "Runs 1 and 4 of the runs table .* are identical in every column"
    (tmp_path / "runs.csv").write_text("\n".join(lines) + "\n")
    result = CliRunner().invoke(app, ["predict", str(tmp_path / "runs.csv"), "--target", "zeroshot/imagenet1k/acc1",
                                      "--law", "loglog", "--bootstrap", "0", "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert re.search(message, " ".join(result.output.split())), result.output


def test_without_a_law_or_the_columns_for_one_the_columns_needed_are_named(tmp_path):
    (tmp_path / "runs.csv").write_text("run,compute,acc1\na,1e18,0.5\nb,1e19,0.6\nc,1e20,0.7\n")
    result = CliRunner().invoke(app, ["predict", str(tmp_path / "runs.csv"), "--target", "acc1",
                                      "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    output = " ".join(result.output.split())
    assert "neither 'params', 'samples' and 'loss'" in output and "nor a compute column 'flops'" in output
    assert "Its columns are: 'acc1', 'compute', 'run'" in output


def test_where_keeps_the_runs_that_meet_every_condition_and_names_what_is_wrong(tmp_path):
    runs = [{"run": "a", "data": "c4", "multiplier": 20.0}, {"run": "b", "data": "c4", "multiplier": 320},
            {"run": "c", "data": "rpj", "multiplier": 20}, {"run": "d", "data": None, "multiplier": 20}]
    assert [run["run"] for run in select_runs(runs, ["data=c4"], "t.csv")] == ["a", "b"]
    assert [run["run"] for run in select_runs(runs, ["multiplier=20"], "t.csv")] == ["a", "c", "d"]  # 20.0 == 20
    assert [run["run"] for run in select_runs(runs, ["data=c4", "multiplier=20"], "t.csv")] == ["a"]
    assert select_runs(runs, [], "t.csv") == runs
    with pytest.raises(UserError, match="--where 'data' is not COLUMN=VALUE"):
        select_runs(runs, ["data"], "t.csv")
    with pytest.raises(UserError, match="t.csv has no column 'dataset'"):
        select_runs(runs, ["dataset=c4"], "t.csv")
    with pytest.raises(UserError, match=r"No run of t.csv left has data=rw; the 4 run\(s\) .* data = c4, rpj, None"):
        select_runs(runs, ["data=rw"], "t.csv")
    with pytest.raises(UserError, match=r"left has multiplier=320; the 1 run\(s\) before this condition hold "
                                        r"multiplier = 20.0"):
        select_runs(runs, ["data=c4", "multiplier=20", "multiplier=320"], "t.csv")
