"""The held-out protocol of docs/prediction.md on the published study's own tables: transferlab's default fit was to
predict the study's largest runs better, on mean relative error over the targets, than the study's own power law in
compute fitted its own way. It does not (measured 2.45% against 1.59%; BENCHMARKS.md), and the test says so: it is
an expected failure, strict, so a change that makes it pass must update the docs.

The tables are not shipped (the study's repository has no license): the tests skip unless they are in
tests/predict/published/ or in the folder TRANSFERLAB_SCALING_STUDY names (tests/predict/published/README.md). The
intervals' coverage is measured by benchmarks/predict_published.py; here the fits run without bootstrap resamples,
which leaves every point prediction as it is (they come from the full-data fit) and takes a tenth of the time.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from transferlab.predict.backtest import backtest, summarise
from transferlab.predict.openclip_study import RESULTS_FILE, RUNS_FILE, TARGETS, THRESHOLD_GMACS, load_study

STUDY = Path(os.environ.get("TRANSFERLAB_SCALING_STUDY", Path(__file__).parent / "published"))
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not ((STUDY / RUNS_FILE).exists() and (STUDY / RESULTS_FILE).exists()),
                                 reason=f"the published study's tables are not in {STUDY} "
                                        f"(tests/predict/published/README.md says how to get them)")]


@pytest.fixture(scope="module")
def summary():
    runs = load_study(STUDY)
    assert len(runs) == 29
    rows = backtest(runs, TARGETS, THRESHOLD_GMACS, bootstrap=0, table=STUDY)
    assert len(rows) == 8 * len(TARGETS)
    assert {row.run.split("_Data")[0] for row in rows} == {"Model-L-14", "Model-g-14", "Model-H-14"}
    assert min(row.extrapolation for row in rows) > 1.5
    return summarise(rows)


def test_the_protocol_reproduces_the_benchmark(summary):
    """The numbers BENCHMARKS.md and docs/prediction.md report, from the committed code."""
    mean = summary["mean_mre"]
    assert mean["transferlab"] == pytest.approx(0.0245, abs=5e-4)
    assert mean["pareto"] == pytest.approx(0.0159, abs=5e-4) and mean["loglog"] == pytest.approx(0.0193, abs=5e-4)


@pytest.mark.xfail(strict=True, reason="measured: transferlab's default 2.45% mean relative error, the study's "
                                       "Pareto fit 1.59% (docs/prediction.md)")
def test_default_fit_beats_the_studys_own_fit_on_its_largest_runs(summary):
    mean = summary["mean_mre"]
    assert mean["transferlab"] < mean["pareto"], summary
