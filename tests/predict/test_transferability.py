"""Transferability scores against independent closed-form references written out here, plus behaviour.

The references avoid the module's shortcuts: RankMe and α-ReQ from the eigenvalues of Gram/covariance matrices
(not an SVD of the data), LogME by maximising log N(y | 0, α⁻¹FFᵀ + β⁻¹I) numerically (not the fixed point),
H-score with per-sample class means and np.linalg.pinv, LEEP, NCE, alignment and uniformity with explicit loops.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy.optimize import minimize
from scipy.stats import linregress

from transferlab.errors import UserError
from transferlab.predict.transferability import (
    _log_evidence,
    _logme_per_class,
    alignment,
    alpha_req,
    h_score,
    leep,
    logme,
    nce,
    rankme,
    uniformity,
)


def classes(n=90, d=6, k=3, separation=2.0, seed=0):
    """Gaussian blobs: features [n, d] whose class means differ by `separation` standard deviations."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % k
    centres = separation * rng.normal(size=(k, d))
    return centres[labels] + rng.normal(size=(n, d)), labels


def softmax(logits):
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


# ---------------------------------------------------------------------------------------------- references


def reference_rankme(x, eps=1e-7):
    sigma = np.sqrt(np.clip(np.linalg.eigvalsh(x.T @ x), 0, None))
    p = sigma / sigma.sum() + eps
    return math.exp(-sum(pk * math.log(pk) for pk in p))


def reference_alpha_req(x):
    eigenvalues = np.sort(np.linalg.eigvalsh(np.cov(x, rowvar=False, bias=True)))[::-1]
    return -linregress(np.log(np.arange(1, len(eigenvalues) + 1)), np.log(eigenvalues)).slope


def reference_alignment(x, y, alpha):
    total = 0.0
    for a, b in zip(x, y, strict=True):
        total += np.linalg.norm(a / np.linalg.norm(a) - b / np.linalg.norm(b)) ** alpha
    return total / len(x)


def reference_uniformity(x, t):
    unit = [row / np.linalg.norm(row) for row in x]
    values = [math.exp(-t * np.sum((a - b) ** 2)) for a, b in itertools.combinations(unit, 2)]
    return math.log(sum(values) / len(values))


def direct_log_evidence(f, y, log_alpha, log_beta):
    """log N(y | 0, α⁻¹FFᵀ + β⁻¹I): the Bayesian linear model's evidence, straight from its definition."""
    n = len(y)
    cov = np.exp(-log_alpha) * f @ f.T + np.exp(-log_beta) * np.eye(n)
    _, logdet = np.linalg.slogdet(cov)
    return -0.5 * (n * math.log(2 * math.pi) + logdet + y @ np.linalg.solve(cov, y))


def reference_logme_class(f, y):
    """max over (log α, log β) of the evidence per sample, best of several Nelder-Mead starts."""
    def objective(params):
        return -direct_log_evidence(f, y, *params) / len(y)

    best = math.inf
    for start in [(0.0, 0.0), (3.0, -1.0), (-3.0, 2.0), (1.0, 4.0)]:
        result = minimize(objective, start, method="Nelder-Mead",
                          options={"xatol": 1e-10, "fatol": 1e-14, "maxiter": 4000, "maxfev": 8000})
        best = min(best, result.fun)
    return -best


def reference_h_score(f, labels):
    f = f - f.mean(axis=0)
    conditional = np.zeros_like(f)
    for c in np.unique(labels):
        conditional[labels == c] = f[labels == c].mean(axis=0)
    cov_f = np.cov(f, rowvar=False, bias=True)
    cov_g = np.cov(conditional, rowvar=False, bias=True)
    return np.trace(np.linalg.pinv(cov_f, rcond=1e-10) @ cov_g)


def reference_leep(theta, labels):
    n, source_classes = theta.shape
    target_classes = sorted(set(labels.tolist()))
    joint = {(y, z): sum(theta[i, z] for i in range(n) if labels[i] == y) / n
             for y in target_classes for z in range(source_classes)}
    marginal = {z: sum(joint[y, z] for y in target_classes) for z in range(source_classes)}
    total = 0.0
    for i in range(n):
        total += math.log(sum(joint[labels[i], z] / marginal[z] * theta[i, z] for z in range(source_classes)))
    return total / n


def reference_nce(source, labels):
    n = len(labels)
    total = 0.0
    for z in set(source.tolist()):
        in_z = [y for s, y in zip(source, labels, strict=True) if s == z]
        for y in set(in_z):
            joint = in_z.count(y) / n
            total += joint * math.log(in_z.count(y) / len(in_z))
    return total


# ------------------------------------------------------------------------------------- against references


def test_rankme_matches_reference():
    x = np.random.default_rng(0).normal(size=(120, 10)) * np.linspace(0.1, 3, 10)
    assert rankme(x) == pytest.approx(reference_rankme(x), rel=1e-6)
    assert rankme(x, eps=1e-3) == pytest.approx(reference_rankme(x, eps=1e-3), rel=1e-6)


def test_alpha_req_matches_reference():
    x = np.random.default_rng(1).normal(size=(200, 12)) * np.arange(1, 13) ** -0.7
    assert alpha_req(x) == pytest.approx(reference_alpha_req(x), rel=1e-6)


def test_alpha_req_drops_zero_eigenvalues():
    rng = np.random.default_rng(2)
    low_rank = rng.normal(size=(150, 5)) @ rng.normal(size=(5, 20))
    centred = low_rank - low_rank.mean(axis=0)
    eigenvalues = np.sort(np.linalg.eigvalsh(centred.T @ centred / len(centred)))[::-1][:5]
    expected = -linregress(np.log(np.arange(1, 6)), np.log(eigenvalues)).slope
    assert alpha_req(low_rank) == pytest.approx(expected, rel=1e-6)


def test_alignment_and_uniformity_match_loops():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(30, 5)), rng.normal(size=(30, 5))
    for alpha in (1, 2, 3.5):
        assert alignment(x, y, alpha=alpha) == pytest.approx(reference_alignment(x, y, alpha), rel=1e-6)
    for t in (0.5, 2, 5):
        assert uniformity(x, t=t) == pytest.approx(reference_uniformity(x, t), rel=1e-6)


def test_logme_evidence_formula_matches_direct_evidence():
    """The SVD form of log p(y | α, β), including the d - n zero singular values when n < d."""
    rng = np.random.default_rng(4)
    for n, d in [(40, 6), (12, 30)]:
        f, y = rng.normal(size=(n, d)), (rng.random(n) < 0.4).astype(float)
        u, sigma, _ = np.linalg.svd(f, full_matrices=False)
        z = u.T @ y
        off_span = float(np.sum((y - u @ z) ** 2))
        for alpha, beta in [(0.3, 2.0), (5.0, 0.7)]:
            ours = _log_evidence(alpha, beta, sigma**2, z, off_span, n, d)
            direct = direct_log_evidence(f, y, math.log(alpha), math.log(beta))
            assert ours == pytest.approx(direct, rel=1e-9)


@pytest.mark.parametrize("separation", [1.0, 0.0])
def test_logme_matches_direct_evidence_maximisation(separation):
    """Also without signal (separation 0), where the optimum drifts to α → ∞ and the fixed point hits its cap."""
    f, labels = classes(n=60, d=5, k=3, separation=separation, seed=5)
    per_class = _logme_per_class(f, labels)
    expected = np.array([reference_logme_class(f, (labels == c).astype(float)) for c in range(3)])
    assert np.all(per_class <= expected + 1e-9)  # the fixed point cannot beat the true maximum
    np.testing.assert_allclose(per_class, expected, rtol=1e-6)
    assert logme(f, labels) == pytest.approx(expected.mean(), rel=1e-6)


def test_h_score_matches_pinv_reference_also_when_rank_deficient():
    f, labels = classes(n=100, d=5, k=4, seed=6)
    assert h_score(f, labels) == pytest.approx(reference_h_score(f, labels), rel=1e-6)
    redundant = np.hstack([f, f[:, :2], f[:, [0]] - 2 * f[:, [3]]])
    assert h_score(redundant, labels) == pytest.approx(reference_h_score(redundant, labels), rel=1e-6)
    assert h_score(redundant, labels) == pytest.approx(h_score(f, labels), rel=1e-6)


def test_leep_matches_loops():
    rng = np.random.default_rng(7)
    theta = softmax(rng.normal(size=(50, 6)) * 2)
    labels = rng.integers(0, 3, 50)
    assert leep(theta, labels) == pytest.approx(reference_leep(theta, labels), rel=1e-6)
    string_labels = np.array(["cat", "dog", "eel"])[labels]
    assert leep(theta, string_labels) == pytest.approx(leep(theta, labels), rel=1e-12)


def test_nce_matches_loops():
    rng = np.random.default_rng(8)
    source, labels = rng.integers(0, 5, 80), rng.integers(0, 3, 80)
    assert nce(source, labels) == pytest.approx(reference_nce(source, labels), rel=1e-6)


# ------------------------------------------------------------------------------------------------ behaviour


def orthonormal(n, d, seed, centred=False):
    x = np.random.default_rng(seed).normal(size=(n, d))
    return np.linalg.qr(x - x.mean(axis=0) if centred else x)[0]


def test_rankme_of_k_equal_singular_values_is_k_and_drops_after_collapse():
    k, d = 5, 32
    equal = 3.0 * orthonormal(200, k, seed=9) @ orthonormal(d, k, seed=10).T
    assert rankme(equal) == pytest.approx(k, rel=1e-3)
    full = np.random.default_rng(11).normal(size=(200, 16))
    collapsed = full @ np.random.default_rng(12).normal(size=(16, 3)) @ np.random.default_rng(13).normal(size=(3, 16))
    assert rankme(collapsed) < 3.01 < rankme(full)


def test_alpha_req_recovers_a_power_law_exponent():
    n, d = 300, 20
    for exponent in (0.5, 1.0, 2.0):
        eigenvalues = np.arange(1, d + 1, dtype=float) ** -exponent
        x = orthonormal(n, d, seed=14, centred=True) @ np.diag(np.sqrt(n * eigenvalues)) @ orthonormal(d, d, 15).T
        assert alpha_req(x + 7.0) == pytest.approx(exponent, abs=1e-8)  # centring removes the offset


def test_alignment_is_zero_for_identical_pairs_and_uniformity_is_lower_when_spread():
    rng = np.random.default_rng(16)
    x = rng.normal(size=(100, 8))
    assert alignment(x, 3 * x) == pytest.approx(0.0, abs=1e-12)
    clustered = x * 0.05 + np.ones(8)
    assert uniformity(x) < uniformity(clustered)


def test_separating_features_score_higher_than_random_ones():
    f, labels = classes(n=150, d=8, k=3, separation=3.0, seed=17)
    noise = np.random.default_rng(18).normal(size=f.shape)
    assert logme(f, labels) > logme(noise, labels)
    assert h_score(f, labels) > h_score(noise, labels) + 0.5
    assert 0 <= h_score(noise, labels) <= 2  # at most min(d, classes - 1)


def test_leep_and_nce_higher_when_source_predicts_the_target():
    rng = np.random.default_rng(19)
    labels = rng.integers(0, 4, 200)
    informative = softmax(5 * np.eye(4)[labels] + rng.normal(size=(200, 4)))
    uninformative = softmax(rng.normal(size=(200, 4)))
    assert leep(informative, labels) > leep(uninformative, labels)
    assert nce(labels, labels) == pytest.approx(0.0, abs=1e-12)
    assert nce(rng.integers(0, 4, 200), labels) < -1.0


def test_logme_is_finite_with_fewer_samples_than_dimensions():
    f, labels = classes(n=12, d=40, k=2, seed=20)
    assert np.isfinite(logme(f, labels))


def test_torch_tensors_give_the_same_scores_as_numpy():
    f, labels = classes(n=80, d=6, k=3, seed=21)
    f32 = f.astype(np.float32)
    tf, tl = torch.from_numpy(f32), torch.from_numpy(labels)
    theta = softmax(f[:, :4]).astype(np.float32)
    pairs = [
        (rankme(tf), rankme(f32)), (alpha_req(tf), alpha_req(f32)),
        (alignment(tf, tf + 1), alignment(f32, f32 + 1)), (uniformity(tf), uniformity(f32)),
        (logme(tf, tl), logme(f32, labels)), (h_score(tf, tl), h_score(f32, labels)),
        (leep(torch.from_numpy(theta), tl), leep(theta, labels)), (nce(tl, tl % 2), nce(labels, labels % 2)),
    ]
    for ours, expected in pairs:
        assert ours == pytest.approx(expected, rel=1e-12)
    assert rankme(tf.requires_grad_()) == pytest.approx(rankme(f32), rel=1e-12)


def test_subsampling_is_seeded():
    x = np.random.default_rng(22).normal(size=(300, 10)) * np.linspace(0.2, 2, 10)
    assert rankme(x, max_samples=50, seed=1) == rankme(x, max_samples=50, seed=1)
    assert rankme(x, max_samples=50, seed=1) != rankme(x, max_samples=50, seed=2)
    assert rankme(x, max_samples=300) == rankme(x)
    assert alpha_req(x, max_samples=50, seed=1) == alpha_req(x, max_samples=50, seed=1)
    assert uniformity(x, max_samples=40, seed=3) == uniformity(x, max_samples=40, seed=3)
    assert uniformity(x, max_samples=40, seed=3) != uniformity(x, max_samples=40, seed=4)


# ---------------------------------------------------------------------------------------------- bad input

GOOD, LABELS = classes(n=30, d=4, k=3, seed=23)
NAN = GOOD.copy()
NAN[3, 1] = np.nan


@pytest.mark.parametrize(("call", "message"), [
    (lambda: rankme(np.ones(5)), "must be 2-D"),
    (lambda: rankme(NAN), "1 NaN/inf"),
    (lambda: rankme(np.zeros((5, 3))), "all zero"),
    (lambda: rankme(np.array([["a", "b"]])), "numeric"),
    (lambda: rankme(GOOD, max_samples=1), "max_samples"),
    (lambda: alpha_req(np.outer(np.arange(10.0), np.ones(4))), "rank 1"),
    (lambda: alignment(GOOD, GOOD[:, :3]), "same shape"),
    (lambda: alignment(GOOD, GOOD, alpha=0), "alpha must be a positive"),
    (lambda: uniformity(np.vstack([GOOD, np.zeros(4)])), "all-zero rows"),
    (lambda: logme(GOOD, LABELS[:-1]), "29 entries but there are 30 samples"),
    (lambda: logme(GOOD, np.zeros(30)), "at least 2"),
    (lambda: logme(NAN, LABELS), "NaN/inf"),
    (lambda: h_score(GOOD, LABELS[:, None]), "must be 1-D"),
    (lambda: h_score(GOOD[:1], LABELS[:1]), "at least 2 rows"),
    (lambda: leep(GOOD[:, :3], LABELS), "apply softmax"),
    (lambda: leep(softmax(GOOD), np.full(30, 7)), "at least 2"),
    (lambda: nce(LABELS, LABELS[:10]), "10 entries but there are 30"),
    (lambda: nce(LABELS, np.where(LABELS == 0, np.nan, 1.0)), "NaN"),
])
def test_bad_input_raises_user_error_naming_the_problem(call, message):
    with pytest.raises(UserError, match=message):
        call()
