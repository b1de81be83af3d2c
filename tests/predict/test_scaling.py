"""Scaling laws fitted to runs generated from known laws with multiplicative noise, and the runs table.

Each law must recover its true parameters inside its bootstrap intervals with a point estimate close to them; the
chained loss → error prediction must cover a held-out run ~5x beyond the fitted compute; extrapolation must warn;
every bad input must raise a UserError that names the run, line or column.
"""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest

from transferlab.errors import UserError
from transferlab.predict.plots import plot_fit
from transferlab.predict.runs_table import append_run, load_runs, numeric_column, require_columns
from transferlab.predict.scaling import (
    LAWS,
    ExponentialErrorLaw,
    OvertrainingLaw,
    SaturatingPowerLaw,
    ScalingExtrapolationWarning,
    _huber_objective,
    _minimise,
    _one_blas_thread,
    chain_predict,
    fit_report,
)

TRUE_SATURATING = {"E": 0.2, "A": 5e4, "alpha": 0.3}
TRUE_OVERTRAINING = {"E": 1.7, "a": 100.0, "b": 300.0, "eta": 0.15}
TRUE_ERROR = {"epsilon": 0.75, "k": 4.41, "gamma": 1.2}
PARAMS = np.geomspace(1e7, 4e8, 5)  # N of the small runs
MULTIPLIERS = np.array([5.0, 10.0, 20.0, 40.0, 80.0])  # M = D / N of the small runs
HELD_OUT = (1.4e9, 1.4e9 * 32)  # ~4.9x the largest fitted compute, inside the fitted multipliers


def saturating(x, E, A, alpha):
    return E + A * np.asarray(x) ** -alpha


def overtraining(N, D, E, a, b, eta):
    compute, multiplier = 6 * np.asarray(N) * np.asarray(D), np.asarray(D) / np.asarray(N)
    return E + (a * multiplier**eta + b * multiplier**-eta) * compute**-eta


def error_of(loss, epsilon, k, gamma):
    return epsilon - k * np.exp(-gamma * np.asarray(loss))


def noisy(values, sigma, rng):
    return values * np.exp(sigma * rng.standard_normal(np.shape(values)))


@pytest.fixture(scope="module")
def compute_runs():
    x = np.geomspace(1e15, 1e19, 16)
    return x, noisy(saturating(x, **TRUE_SATURATING), 0.02, np.random.default_rng(0))


@pytest.fixture(scope="module")
def saturating_law(compute_runs):
    return SaturatingPowerLaw("C", "error").fit(*compute_runs)


@pytest.fixture(scope="module")
def grid_runs():
    """5 model sizes x 5 token multipliers; loss with 1% noise, downstream error of the true loss with 2% noise."""
    rng = np.random.default_rng(1)
    N = np.repeat(PARAMS, len(MULTIPLIERS))
    D = N * np.tile(MULTIPLIERS, len(PARAMS))
    loss = overtraining(N, D, **TRUE_OVERTRAINING)
    return N, D, noisy(loss, 0.01, rng), noisy(error_of(loss, **TRUE_ERROR), 0.02, rng)


@pytest.fixture(scope="module")
def overtraining_law(grid_runs):
    N, D, loss, _ = grid_runs
    return OvertrainingLaw().fit(N, D, loss)


@pytest.fixture(scope="module")
def error_law(grid_runs):
    _, _, loss, error = grid_runs
    return ExponentialErrorLaw().fit(loss, error)


def assert_recovers(law, truth, tolerance):
    """Every true parameter inside its 90% bootstrap interval, every point estimate within its relative tolerance."""
    intervals = law.param_intervals(0.9)
    for name, true in truth.items():
        low, high = intervals[name]
        assert low <= true <= high, f"{name}: true {true} outside [{low}, {high}]"
        assert law.params_[name] == pytest.approx(true, rel=tolerance[name]), name


# --- recovering known laws ----------------------------------------------------------------------------------------


def test_saturating_power_law_recovers_its_parameters(saturating_law, compute_runs):
    # observed: E -3.2%, A -3.1%, alpha -0.4%
    assert_recovers(saturating_law, TRUE_SATURATING, {"E": 0.06, "A": 0.1, "alpha": 0.01})
    x = np.geomspace(1e15, 1e19, 7)
    curve = saturating_law.predict(x).value
    np.testing.assert_allclose(curve, saturating(x, **TRUE_SATURATING), rtol=0.02)


def test_overtraining_law_recovers_its_parameters_on_a_grid_of_sizes_and_multipliers(overtraining_law):
    # observed: E -3.0%, a -16%, b -18%, eta -4.1% (a and b trade off against E and eta, so they are the loosest)
    assert_recovers(overtraining_law, TRUE_OVERTRAINING, {"E": 0.05, "a": 0.3, "b": 0.3, "eta": 0.08})
    assert overtraining_law.range_["M"] == pytest.approx((5.0, 80.0))


def test_exponential_error_law_recovers_its_parameters(error_law):
    # observed: epsilon -1.6%, k +2.2%, gamma +2.5%
    assert_recovers(error_law, TRUE_ERROR, {"epsilon": 0.05, "k": 0.05, "gamma": 0.05})


def test_chain_predicts_a_held_out_large_run_within_its_interval(overtraining_law, error_law):
    true_loss = overtraining(*HELD_OUT, **TRUE_OVERTRAINING)
    true_error = error_of(true_loss, **TRUE_ERROR)
    with pytest.warns(ScalingExtrapolationWarning, match=r"4\.9x beyond it in C"):
        loss = overtraining_law.predict(*HELD_OUT)
    assert loss.low[0] <= true_loss <= loss.high[0]
    assert loss.value[0] == pytest.approx(true_loss, rel=0.02)  # observed -0.9%
    with pytest.warns(ScalingExtrapolationWarning):
        chained = chain_predict(overtraining_law, error_law, *HELD_OUT)
    assert chained.low[0] <= true_error <= chained.high[0]
    assert chained.value[0] == pytest.approx(true_error, rel=0.05)  # observed -1.7%
    assert chained.extrapolation[0] == pytest.approx(4.9, rel=0.01)
    assert json.loads(json.dumps(chained.to_dict()))["extrapolation"] == [pytest.approx(4.9, rel=0.01)]


@pytest.mark.parametrize("fitted", ["saturating_law", "error_law"])
def test_starting_from_the_best_grid_points_reaches_the_optimum_of_every_grid_point(fitted, request, compute_runs,
                                                                                   grid_runs):
    """The brute-force reference runs L-BFGS-B from all grid points (200 and 150) instead of the best 10."""
    law = request.getfixturevalue(fitted)
    x, y = compute_runs if fitted == "saturating_law" else grid_runs[2:]
    features, log_y = law._features({next(iter(law.range_)): np.asarray(x)}), np.log(y)
    with _one_blas_thread():
        every = min(_minimise(law, start, features, log_y)[1] for start in law._grid(features, log_y))
    assert _huber_objective(law.theta_, law, features, log_y)[0] <= every + 1e-9


def test_a_new_runs_interval_adds_the_scatter_of_runs_to_the_laws(saturating_law):
    """Inside the fitted range the law is pinned down by 16 runs and a new run's 2% noise dominates its interval."""
    law_only = saturating_law.predict(1e17, interval="law")
    new_run = saturating_law.predict(1e17)
    assert new_run.high[0] - new_run.low[0] > 1.5 * (law_only.high[0] - law_only.low[0])  # observed 1.96x
    assert new_run.high[0] / new_run.low[0] == pytest.approx(np.exp(2 * 1.645 * 0.02), rel=0.3)  # ±1.645σ, σ = 2%
    np.testing.assert_array_equal(new_run.value, law_only.value)
    n, p = 16, 3
    draws = np.log(saturating_law.run_scatter(500))
    assert set(np.round(draws, 12)) <= set(np.round(saturating_law.residuals_log_ * np.sqrt(n / (n - p)), 12))
    assert len(set(np.round(draws, 12))) > 10  # drawn from many of the 16 residuals
    np.testing.assert_array_equal(draws, np.log(saturating_law.run_scatter(500)))  # seeded
    with pytest.raises(UserError, match="give 'run'"):
        saturating_law.predict(1e16, interval="both")


@pytest.mark.slow
def test_saturating_intervals_cover_the_truth_across_datasets():
    """90% intervals over 20 noisy datasets: observed coverage 19/20 for each of E, A and alpha (~45 s)."""
    x = np.geomspace(1e15, 1e19, 16)
    covered = dict.fromkeys(TRUE_SATURATING, 0)
    for seed in range(20):
        y = noisy(saturating(x, **TRUE_SATURATING), 0.02, np.random.default_rng(100 + seed))
        intervals = SaturatingPowerLaw().fit(x, y, n_bootstrap=100, seed=seed).param_intervals(0.9)
        for name, (low, high) in intervals.items():
            covered[name] += low <= TRUE_SATURATING[name] <= high
    assert min(covered.values()) >= 15, covered  # P(<= 14 of 20) is ~1% at a true coverage of 90%


def test_bootstrap_is_seeded(grid_runs):
    _, _, loss, error = grid_runs
    first = ExponentialErrorLaw().fit(loss, error, n_bootstrap=4, seed=3)
    second = ExponentialErrorLaw().fit(loss, error, n_bootstrap=4, seed=3)
    np.testing.assert_array_equal(first.boot_, second.boot_)


# --- extrapolation ------------------------------------------------------------------------------------------------


def test_prediction_beyond_the_fitted_range_warns_with_its_factor(saturating_law):
    with pytest.warns(ScalingExtrapolationWarning, match=r"10x beyond it in C"):
        prediction = saturating_law.predict([1e18, 1e20])
    np.testing.assert_allclose(prediction.extrapolation, [1.0, 10.0])
    with pytest.warns(ScalingExtrapolationWarning, match=r"100x beyond it in C"):
        assert saturating_law.predict(1e13).extrapolation[0] == pytest.approx(100.0)


def test_prediction_inside_the_fitted_range_does_not_warn(saturating_law, overtraining_law):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        prediction = saturating_law.predict([1e15, 3e17, 1e19])
        assert overtraining_law.predict(1e8, 2e9).extrapolation[0] == 1.0
    np.testing.assert_array_equal(prediction.extrapolation, 1.0)
    assert np.all(prediction.low <= prediction.value) and np.all(prediction.value <= prediction.high)


def test_overtraining_beyond_the_fitted_multipliers_warns(overtraining_law):
    with pytest.warns(ScalingExtrapolationWarning, match=r"4x beyond it in M"):
        overtraining_law.predict(4e7, 4e7 * 320)


# --- reports and plots --------------------------------------------------------------------------------------------


def test_fit_report_is_json_with_estimates_intervals_and_range(saturating_law):
    report = json.loads(json.dumps(fit_report(saturating_law)))
    assert report["law"] == "saturating_power_law" and report["n_runs"] == 16 and report["n_bootstrap"] == 200
    alpha = report["params"]["alpha"]
    assert alpha["low"] <= alpha["estimate"] <= alpha["high"]
    assert report["fitted_range"] == {"C": [1e15, 1e19]}
    assert 0.005 < report["residual_rms_log"] < 0.04  # the noise is 2% in log space
    assert set(LAWS) == {"saturating_power_law", "power_law", "overtraining_law", "exponential_error_law"}


def test_plot_fit_writes_pngs(tmp_path, saturating_law, compute_runs, overtraining_law, error_law, grid_runs):
    x, y = compute_runs
    N, D, loss, error = grid_runs
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the deliberate extrapolation of the curves must not leak warnings
        held_out_loss = overtraining(*HELD_OUT, **TRUE_OVERTRAINING)
        paths = [plot_fit(saturating_law, x, y, [1e20], saturating(1e20, **TRUE_SATURATING), path=tmp_path / "a.png"),
                 plot_fit(overtraining_law, (N, D), loss, ([HELD_OUT[0]], [HELD_OUT[1]]), [held_out_loss],
                          path=tmp_path / "b.png"),
                 plot_fit(error_law, loss, error, [held_out_loss], error_of(held_out_loss, **TRUE_ERROR),
                          path=tmp_path / "c.png")]
    for path in paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --- bad input to the laws ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("law", "args", "needed"), [
    (SaturatingPowerLaw(), ([1.0, 2.0, 3.0], [3.0, 2.0, 1.5]), 4),
    (SaturatingPowerLaw(), ([1.0, 1.0, 2.0, 2.0, 3.0, 3.0], [3.0, 3.1, 2.0, 2.1, 1.5, 1.6]), 4),
    (OvertrainingLaw(), ([1e7, 1e7, 2e7, 2e7], [1e8, 4e8, 2e8, 8e8], [4.0, 3.8, 3.7, 3.5]), 5),
    (ExponentialErrorLaw(), ([3.0, 2.5, 2.0], [0.7, 0.6, 0.5]), 4),
])
def test_too_few_runs_say_how_many_are_needed(law, args, needed):
    with pytest.raises(UserError, match=f"needs at least {needed} runs"):
        law.fit(*args, n_bootstrap=0)


@pytest.mark.parametrize(("law", "args", "message"), [
    (SaturatingPowerLaw(), ([1.0, 2.0, 3.0, 4.0], [3.0, 2.0, 0.0, 1.0]), "Run 3 has y = 0"),
    (SaturatingPowerLaw("C"), ([1.0, -2.0, 3.0, 4.0], [3.0, 2.0, 1.5, 1.0]), "Run 2 has C = -2"),
    (OvertrainingLaw(), ([0.0, 1e7, 2e7, 2e7, 4e7], [1e8, 4e8, 2e8, 8e8, 4e8], [4.0, 3.8, 3.7, 3.5, 3.4]),
     "Run 1 has N = 0"),
    (ExponentialErrorLaw(), ([3.0, 2.5, 2.0, 1.8], [0.7, 0.6, -0.1, 0.4]), "Run 3 has error = -0.1"),
])
def test_non_positive_values_name_the_run(law, args, message):
    with pytest.raises(UserError, match=message):
        law.fit(*args, n_bootstrap=0)


@pytest.mark.parametrize(("law", "args", "message"), [
    (SaturatingPowerLaw(), ([1.0, math.nan, 3.0, 4.0], [3.0, 2.0, 1.5, 1.0]), "Run 2 has x = nan"),
    (ExponentialErrorLaw(), ([3.0, 2.5, 2.0, None], [0.7, 0.6, 0.5, 0.4]), "Run 4 has loss = nan"),
    (OvertrainingLaw(), ([1e7, 1e7, 2e7, 2e7, 4e7], [1e8, 4e8, 2e8, 8e8, 4e8], [4.0, 3.8, math.inf, 3.5, 3.4]),
     "Run 3 has loss = inf"),
])
def test_nan_values_name_the_run(law, args, message):
    with pytest.raises(UserError, match=message):
        law.fit(*args, n_bootstrap=0)


def test_other_bad_inputs_raise_user_errors(saturating_law):
    with pytest.raises(UserError, match="same token multiplier"):
        OvertrainingLaw().fit([1e7, 2e7, 4e7, 8e7, 16e7], np.array([1e7, 2e7, 4e7, 8e7, 16e7]) * 20,
                              [4.0, 3.8, 3.6, 3.4, 3.2], n_bootstrap=0)
    with pytest.raises(UserError, match="4 values of x but 3"):
        SaturatingPowerLaw().fit([1.0, 2.0, 3.0, 4.0], [3.0, 2.0, 1.5], n_bootstrap=0)
    with pytest.raises(UserError, match="must all be numbers"):
        SaturatingPowerLaw().fit([1.0, "big", 3.0, 4.0], [3.0, 2.0, 1.5, 1.0], n_bootstrap=0)
    with pytest.raises(UserError, match="between 0 and 1"):
        saturating_law.predict(1e16, level=90)
    with pytest.raises(UserError, match="Run 1 has C = 0"):
        saturating_law.predict(0.0)
    with pytest.raises(RuntimeError, match="not fitted"):
        SaturatingPowerLaw().predict(1.0)


# --- runs tables --------------------------------------------------------------------------------------------------


def test_load_runs_reads_csv_with_numbers_strings_and_empty_cells(tmp_path):
    path = tmp_path / "runs.csv"
    path.write_text("name,id,N,D,loss\nsmall,007,1e7,2e8,3.5\nlarge,a12,1e8,,3.1\n")
    assert load_runs(path) == [{"name": "small", "id": "007", "N": 1e7, "D": 2e8, "loss": 3.5},
                               {"name": "large", "id": "a12", "N": 1e8, "D": None, "loss": 3.1}]


def test_load_runs_reads_tsv_and_jsonl(tmp_path):
    (tmp_path / "runs.tsv").write_text("N\tloss\n1e7\t3.5\n\n2e7\t3.2\n")
    assert load_runs(tmp_path / "runs.tsv") == [{"N": 1e7, "loss": 3.5}, {"N": 2e7, "loss": 3.2}]
    (tmp_path / "runs.jsonl").write_text('{"N": 10000000, "name": "a", "loss": null}\n\n{"N": 2e7, "name": ""}\n')
    runs = load_runs(tmp_path / "runs.jsonl")
    assert runs == [{"N": 1e7, "name": "a", "loss": None}, {"N": 2e7, "name": None}]
    assert isinstance(runs[0]["N"], float)


def test_bad_jsonl_line_is_named_by_number(tmp_path):
    path = tmp_path / "runs.jsonl"
    path.write_text('{"N": 1e7}\n\n{"N": 2e7,}\n{"N": 3e7}\n')
    with pytest.raises(UserError, match=r"Line 3 of the runs table .*runs\.jsonl is not valid JSON"):
        load_runs(path)
    path.write_text('{"N": 1e7}\n[1, 2]\n')
    with pytest.raises(UserError, match="Line 2 .* not an object"):
        load_runs(path)


@pytest.mark.parametrize(("name", "content", "message"), [
    ("runs.txt", "N,loss\n1,2\n", "extension '.txt'"),
    ("runs.csv", "N,loss\n", "holds no runs"),
    ("runs.jsonl", "\n\n", "holds no runs"),
    ("runs.csv", "N,loss\n1,2\n3,4,5\n", "Line 3 .* has 3 cells but the header names 2"),
    ("runs.csv", "N,,loss\n1,2,3\n", "Column 2 of the header line .* has no name"),
    ("runs.csv", b"N,loss\n\xff,2\n", "not UTF-8"),
])
def test_bad_tables_raise_user_errors(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(UserError, match=message):
        load_runs(path)


def test_unreadable_tables_raise_user_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_runs(tmp_path / "missing.csv")
    (tmp_path / "folder.csv").mkdir()
    with pytest.raises(UserError, match="Cannot read the runs table"):
        load_runs(tmp_path / "folder.csv")


def test_require_columns_lists_missing_and_existing_columns():
    runs = [{"N": 1.0, "Loss": 3.0}, {"N": 2.0, "tokens": 5.0}]
    require_columns(runs, ["N", "tokens"], "runs.csv")
    with pytest.raises(UserError) as caught:
        require_columns(runs, ["n", "D", "loss"], "runs.csv")
    message = str(caught.value)
    assert "runs.csv has no column 'n' (did you mean 'N'?), 'D', 'loss' (did you mean 'Loss'?)" in message
    assert "Its columns are: 'N', 'Loss', 'tokens'" in message


def test_numeric_column_names_the_run_without_a_number(tmp_path):
    path = tmp_path / "runs.csv"
    path.write_text("N,loss,note\n1e7,3.5,x\n2e7,,y\n4e7,nan,z\n")
    runs = load_runs(path)
    np.testing.assert_array_equal(numeric_column(runs, "N", path), [1e7, 2e7, 4e7])
    with pytest.raises(UserError, match="Run 2 of the runs table .* has no value in column 'loss'"):
        numeric_column(runs, "loss", path)
    with pytest.raises(UserError, match="Run 3 .* has nan in column 'loss'"):
        numeric_column([runs[0], runs[0], runs[2]], "loss", path)
    with pytest.raises(UserError, match="Run 1 .* has 'x' in column 'note'"):
        numeric_column(runs, "note", path)


def test_append_run_creates_and_appends_json_lines(tmp_path):
    path = tmp_path / "new" / "runs.jsonl"
    append_run(path, {"N": 1e7, "D": np.float64(2e8), "loss": 3.5, "name": "small"})
    append_run(path, {"N": np.int64(20_000_000), "loss": 3.2})
    assert path.read_text().count("\n") == 2
    assert load_runs(path) == [{"N": 1e7, "D": 2e8, "loss": 3.5, "name": "small"}, {"N": 2e7, "loss": 3.2}]


def test_append_run_after_a_cut_short_line_starts_a_new_line(tmp_path):
    path = tmp_path / "runs.jsonl"
    path.write_text('{"N": 1e7}\n{"N": ')
    append_run(path, {"N": 3e7})
    assert path.read_text().split("\n")[2] == '{"N": 30000000.0}'
    with pytest.raises(UserError, match="Line 2"):
        load_runs(path)


def test_append_run_refuses_other_formats(tmp_path):
    with pytest.raises(UserError, match="does not end in .jsonl"):
        append_run(tmp_path / "runs.csv", {"N": 1.0})


def test_a_table_fits_end_to_end(tmp_path, compute_runs):
    path = tmp_path / "runs.jsonl"
    for x, y in zip(*compute_runs, strict=True):
        append_run(path, {"C": x, "error": y})
    runs = load_runs(path)
    require_columns(runs, ["C", "error"], path)
    law = SaturatingPowerLaw("C", "error").fit(numeric_column(runs, "C", path), numeric_column(runs, "error", path),
                                               n_bootstrap=0)
    assert law.params_["alpha"] == pytest.approx(TRUE_SATURATING["alpha"], rel=0.01)
    report = fit_report(law)  # without resamples the intervals are null, never NaN
    assert report["params"]["E"]["low"] is None and report["params"]["E"]["estimate"] is not None
    json.dumps(report, allow_nan=False)
