"""`transferlab rank` on the checkpoints of one run: scores from the cached features, the measured linear
probe from each checkpoint's results.json, and the rank correlations between them."""

import json

import numpy as np
import pytest
from safetensors.torch import load_file
from scipy.stats import spearmanr
from typer.testing import CliRunner

from tests.conftest import TINY
from transferlab.cli import app
from transferlab.config import load_recipe
from transferlab.evaluate.ranking import rank_correlations
from transferlab.predict.transferability import rankme
from transferlab.train.loop import pretrain

SUITE = ["eval.datasets=[digits]", "eval.tasks=[linear_probe]", "eval.linear_probe.weight_decays=[0.001]"]


@pytest.mark.slow
def test_rank_scores_checkpoints_against_their_measured_probe(tmp_path):
    run = tmp_path / "run"
    pretrain(load_recipe(None, TINY + ["train.checkpoint_every=2"]), run)
    checkpoints = [str(run / "checkpoints" / f"step_{step}") for step in (4, 6, 8)]
    runner = CliRunner()
    for checkpoint in checkpoints:  # into <run>/eval-step_<n>/, where rank looks for the measured metric
        result = runner.invoke(app, ["eval", checkpoint, "--suite", "default", *[a for o in SUITE
                                                                             for a in ("--set", o)]])
        assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["rank", *checkpoints, "--data", "digits", "--out", str(tmp_path / "rank")])
    assert result.exit_code == 0, result.output

    record = json.loads((tmp_path / "rank" / "rank.json").read_text())
    assert [row["model"] for row in record["models"]] == checkpoints
    for row, checkpoint in zip(record["models"], checkpoints, strict=True):
        results = json.loads((run / f"eval-{checkpoint.rsplit('/', 1)[1]}" / "results.json").read_text())
        assert row["measured"] == results["tasks"][0]["metrics"]["acc1"]
        assert set(row["scores"]) == {"rankme", "alpha_req", "uniformity", "logme", "h_score", "alignment", "leep",
                                      "nce"}
        assert all(np.isfinite(value) for value in row["scores"].values())
    # RankMe recomputed from the features rank cached (the train split of digits)
    cached = sorted((tmp_path / "rank" / "features").glob("*/digits_train.safetensors"))
    assert len(cached) == 3
    recomputed = {round(rankme(load_file(str(path))["embeddings"].numpy()), 9) for path in cached}
    assert recomputed == {round(row["scores"]["rankme"], 9) for row in record["models"]}
    measured = [row["measured"] for row in record["models"]]
    expected = spearmanr([row["scores"]["logme"] for row in record["models"]], measured).statistic
    if np.ptp(measured) > 0:
        assert record["correlations"]["logme"]["spearman"] == pytest.approx(expected)


def test_correlations_need_three_measured_models_and_skip_constant_scores():
    scores = [{"a": 1.0, "b": 5.0}, {"a": 2.0, "b": 5.0}, {"a": 3.0, "b": 5.0}, {"a": 4.0, "b": 5.0}]
    assert rank_correlations(scores[:3], [0.1, None, 0.3]) == {}
    found = rank_correlations(scores, [0.4, 0.3, 0.2, 0.1])
    assert set(found) == {"a"}  # b is constant: no correlation to report
    assert found["a"]["spearman"] == pytest.approx(-1.0) and found["a"]["kendall"] == pytest.approx(-1.0)
    assert found["a"]["models"] == 4
