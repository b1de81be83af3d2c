"""The held-out protocol of docs/prediction.md on the published study's own tables: transferlab's default fit must
predict the study's largest runs better, on mean relative error over the targets, than the study's own power law in
compute fitted its own way.

The tables are not shipped (the study's repository has no license): the test skips unless they are in
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
pytestmark = pytest.mark.skipif(not ((STUDY / RUNS_FILE).exists() and (STUDY / RESULTS_FILE).exists()),
                                reason=f"the published study's tables are not in {STUDY} "
                                       f"(tests/predict/published/README.md says how to get them)")


@pytest.mark.slow
def test_default_fit_beats_the_studys_own_fit_on_its_largest_runs():
    runs = load_study(STUDY)
    assert len(runs) == 29
    rows = backtest(runs, TARGETS, THRESHOLD_GMACS, bootstrap=0, table=STUDY)
    assert len(rows) == 8 * len(TARGETS)
    held = {row.run.split("_Data")[0] for row in rows}
    assert held == {"Model-L-14", "Model-g-14", "Model-H-14"}
    assert min(row.extrapolation for row in rows) > 1.5
    summary = summarise(rows)
    mean = summary["mean_mre"]
    assert mean["transferlab"] < mean["pareto"], summary
