"""The second study's held-out protocol (docs/prediction.md) on its shipped table: transferlab's default predicts
Gadre et al. 2024's largest language models better than the study's own fit, on mean relative error over the targets
and on each target, and reproduces the numbers BENCHMARKS.md and the docs report.

The table is shipped (tests/predict/published/gadre2024/, MIT), so this runs in every test run. The intervals'
coverage is measured by benchmarks/predict_published.py --study overtraining; here the fits run without bootstrap
resamples, which leaves every point prediction as it is (they come from the full-data fit).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from transferlab.predict.backtest import summarise
from transferlab.predict.overtraining_backtest import backtest_overtraining
from transferlab.predict.overtraining_study import HOLDOUT, TARGETS
from transferlab.predict.runs_table import load_runs

RUNS = Path(__file__).parent / "published" / "gadre2024" / "runs.csv"


@pytest.fixture(scope="module")
def summary():
    rows = backtest_overtraining(load_runs(RUNS), TARGETS, HOLDOUT, bootstrap=0, table=RUNS)
    assert len(rows) == 3 * HOLDOUT * len(TARGETS)
    assert {row.run.split("-", 1)[1] for row in rows} == {"open_lm_7b-1.0", "open_lm_1b-4.0", "open_lm_1b-32.0",
                                                         "open_lm_1b-16.0"}
    assert min(row.extrapolation for row in rows) > 3
    return summarise(rows)


def test_the_protocol_reproduces_the_benchmark(summary):
    mean = summary["mean_mre"]
    assert mean["transferlab"] == pytest.approx(0.0223, abs=5e-4)
    assert mean["study"] == pytest.approx(0.0295, abs=5e-4) and mean["all_runs"] == pytest.approx(0.0302, abs=5e-4)


def test_default_fit_beats_the_studys_own_fit_on_its_largest_runs(summary):
    assert summary["mean_mre"]["transferlab"] < summary["mean_mre"]["study"], summary
    for target, entry in summary["targets"].items():
        assert entry["transferlab"]["mre"] < entry["study"]["mre"], target
