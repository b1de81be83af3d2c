"""The main job, `transferlab run`, on the default recipe at reduced size, then `transferlab eval`."""

import json

import pytest
from typer.testing import CliRunner

from transferlab.cli import app
from transferlab.evaluate import features

runner = CliRunner()
REDUCED = ["train.steps=40", "train.checkpoint_every=20", "train.warmup_steps=5",
           "eval.linear_probe.weight_decays=[0.0001,0.01]", "logging.tensorboard=true", "logging.mlflow=true"]


def sets(overrides):
    return [a for o in overrides for a in ("--set", o)]


@pytest.mark.slow
def test_run_then_eval_on_the_default_recipe(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    result = runner.invoke(app, ["run", "--out", str(run_dir), *sets(REDUCED)])
    assert result.exit_code == 0, result.output

    # the run directory contract
    assert (run_dir / "config.yaml").is_file()
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == list(range(10, 41, 10))
    assert metrics[-1]["loss"] < metrics[0]["loss"]
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["latest", "step_20", "step_40"]
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert list((run_dir / "mlruns").rglob("metrics/loss"))

    # results.json in the contract format, with the tasks of the foundation
    results = json.loads((run_dir / "eval" / "results.json").read_text())
    assert set(results) == {"model", "suite", "created", "provenance", "tasks"}
    assert set(results["provenance"]["datasets"]) == {"mnist5k", "digits"}
    assert {"transferlab", "commit", "libraries", "device", "precision", "suite_hash"} <= set(results["provenance"])
    weights = results["provenance"]["weights"]  # the trained model is the final checkpoint's
    assert (weights["origin"], weights["step"]) == ("checkpoint", 40) and "random weights" not in result.output
    assert weights["checkpoint"] == str((run_dir / "checkpoints" / "step_40").resolve())
    found = {(t["task"], t["dataset"], t["split"]): t["metrics"] for t in results["tasks"]}
    assert set(found) == {(task, dataset, "test") for task in ("zeroshot_classification", "linear_probe")
                          for dataset in ("mnist5k", "digits")}
    for values in found.values():
        assert all(0 <= values[k] <= 1 for k in values if k != "weight_decay")
    assert found[("zeroshot_classification", "mnist5k", "test")]["acc1"] > 0.7  # after only 40 steps
    assert found[("linear_probe", "digits", "test")]["acc1"] > 0.8
    report = (run_dir / "eval" / "report.html").read_text()
    assert report.count("<img") == 7  # loss curve, a confusion matrix per (task, dataset), a map per dataset
    assert "mnist5k" in report and "digits" in report
    assert "zero-shot" in result.output and "linear probe" in result.output  # the printed table

    # eval re-evaluates without retraining, from the cached features, to the same numbers
    def no_encoder(*args, **kwargs):
        raise AssertionError("the features of an unchanged model must come from the cache")

    monkeypatch.setattr(features, "embed_images", no_encoder)
    again = runner.invoke(app, ["eval", str(run_dir)])
    assert again.exit_code == 0, again.output
    reevaluated = json.loads((run_dir / "eval" / "results.json").read_text())
    assert [t["metrics"] for t in reevaluated["tasks"]] == [t["metrics"] for t in results["tasks"]]
    assert reevaluated["provenance"]["weights"] == weights
