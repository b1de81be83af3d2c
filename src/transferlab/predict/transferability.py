"""Transferability scores: how well a frozen representation will transfer, without training on the task.

Two families. *Label-free* scores look only at the embeddings of a model and predict how useful they are:

- **RankMe** (Garrido et al., 2023, "RankMe: Assessing the downstream performance of pretrained self-supervised
  representations by their rank", ICML). With σ_1..σ_min(n,d) the singular values of the [n, d] embedding matrix
  (used as given, not centred, as in the paper), p_k = σ_k / ‖σ‖₁ + ε and RankMe = exp(−Σ_k p_k log p_k), a smooth
  effective rank from about 1 to min(n, d). Higher is better: a collapsed representation has RankMe ≈ 1, and k equal
  singular values give RankMe ≈ k.
- **α-ReQ** (Agrawal et al., 2022, "α-ReQ: Assessing Representation Quality in Self-Supervised Learning by
  measuring eigenspectrum decay", NeurIPS). With λ_1 ≥ λ_2 ≥ … the eigenvalues of the covariance of the centred
  features (squared singular values / n), (near-)zero ones dropped, α is minus the least-squares slope of log λ_k
  on log k, i.e. the exponent of a power law λ_k ∝ k^−α. Small α is a flat spectrum (many directions of equal
  variance: expressive but noise-like), large α a fast decay (few directions carry the variance: collapsed).
  The paper reports the best linear-probe accuracy near α ≈ 1, so α is not "higher is better": compare
  |α − 1|, and compare models of the same architecture.
- **Alignment and uniformity** (Wang & Isola, 2020, "Understanding Contrastive Representation Learning through
  Alignment and Uniformity on the Hypersphere", ICML). On L2-normalised rows, alignment = mean_i ‖x_i − y_i‖^α
  over positive pairs (lower is better) and uniformity = log mean_{i<j} exp(−t ‖x_i − x_j‖²) (lower is better,
  more uniform on the sphere).

*Label-based* scores also use the target task's labels:

- **LogME** (You et al., 2021, "LogME: Practical Assessment of Pre-trained Models for Transfer Learning", ICML).
  For each class c the one-hot column y ∈ {0,1}ⁿ is modelled as a Bayesian linear regression on the features
  F [n, d], y = Fw + ε, w ~ N(0, α⁻¹I), ε ~ N(0, β⁻¹I). With A = αI + βFᵀF, posterior mean m = βA⁻¹Fᵀy and
  γ = Σ_i βσ_i²/(α + βσ_i²), the log evidence log p(y | F, α, β) is
  L = n/2 log β + d/2 log α − n/2 log 2π − β/2 ‖Fm − y‖² − α/2 ‖m‖² − 1/2 log|A|,
  maximised over (α, β) by MacKay's fixed point α ← γ/‖m‖², β ← (n − γ)/‖Fm − y‖² (MacKay, 1992; Algorithm 1 of
  the paper). Everything is evaluated through the thin SVD F = U diag(σ) Vᵀ: with z = Uᵀy,
  ‖m‖² = Σ_i (βσ_i z_i / (α + βσ_i²))², ‖Fm − y‖² = Σ_i (α z_i / (α + βσ_i²))² + ‖y − Uz‖², and
  log|A| = Σ_i log(α + βσ_i²) + (d − min(n, d)) log α. LogME is the mean over classes of L/n; higher is better.
- **H-score** (Bao et al., 2019, "An Information-Theoretic Approach to Transferability in Task Transfer
  Learning", ICIP): tr(cov(f)⁺ cov(E[f | y])), the between-class variance of the features measured in the
  metric of their total variance (a multi-class Fisher criterion). cov(f)⁺ is the pseudo-inverse that drops
  eigenvalues below 1e-10 × the largest, so redundant (linearly dependent) feature dimensions do not blow it
  up. Between 0 and min(d, classes − 1); higher is better.
- **LEEP** (Nguyen et al., 2020, "LEEP: A New Measure to Evaluate Transferability of Learned Representations",
  ICML). θ(x_i) [n, Z] is a source classifier's softmax on the target data. The empirical joint is
  P(y, z) = (1/n) Σ_i θ(x_i)_z 1[y_i = y], P(y | z) = P(y, z)/P(z), and LEEP = (1/n) Σ_i log Σ_z P(y_i | z) θ(x_i)_z,
  the average log-likelihood of the "expected empirical predictor". At most 0; higher is better.
- **NCE** (Tran et al., 2019, "Transferability and Hardness of Supervised Classification Tasks", ICCV): the
  negative conditional entropy −H(Y | Z) = Σ_{y,z} P(y, z) log P(y | z) of the target labels y given the source
  classifier's hard labels z, from their empirical joint distribution. At most 0; higher is better.

Everything is computed in float64 with numpy and scipy. Inputs may be numpy arrays or torch tensors (torch is
not imported here). Bad input raises `UserError` with a message that says what is wrong and what to do.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.spatial.distance import pdist
from scipy.special import logsumexp

from transferlab.errors import UserError

_LOGME_TOL = 1e-5
_LOGME_MAX_ITER = 100
_HSCORE_RCOND = 1e-10
_TINY = 1e-300


# ---------------------------------------------------------------------------------------------------- inputs


def _to_numpy(x: Any) -> np.ndarray:
    """A numpy view of an array or a torch tensor (moved to the CPU; floating tensors widened to float64)."""
    if hasattr(x, "detach"):
        x = x.detach().cpu()
        if x.is_floating_point():
            x = x.double()
    return np.asarray(x)


def _features(x: Any, name: str = "features", min_rows: int = 2) -> np.ndarray:
    """A finite float64 matrix [n, d] with at least `min_rows` rows."""
    try:
        array = _to_numpy(x).astype(np.float64, copy=False)
    except (TypeError, ValueError) as error:
        raise UserError(f"{name} must be a numeric [n, d] array or tensor; could not convert it ({error}).") from None
    if array.ndim != 2:
        raise UserError(f"{name} must be 2-D [n samples, d dimensions], got shape {array.shape}; "
                        f"reshape it (e.g. flatten everything after the first axis).")
    if array.shape[0] < min_rows or array.shape[1] < 1:
        raise UserError(f"{name} has shape {array.shape}; need at least {min_rows} rows and 1 column.")
    bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
    if bad:
        raise UserError(f"{name} contains {bad} NaN/inf values; drop or fix those samples before scoring.")
    return array


def _labels(labels: Any, n: int | None, name: str = "labels", min_classes: int = 2) -> np.ndarray:
    """Class indices 0..C-1 of a 1-D label array with n entries (any length if None), at least `min_classes`."""
    array = _to_numpy(labels)
    if array.ndim != 1:
        raise UserError(f"{name} must be 1-D (one class per sample), got shape {array.shape}.")
    if n is not None and len(array) != n:
        raise UserError(f"{name} has {len(array)} entries but there are {n} samples; pass one label per sample "
                        f"(in the same order).")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise UserError(f"{name} contains NaN/inf; drop the unlabelled samples before scoring.")
    classes, index = np.unique(array, return_inverse=True)
    if len(classes) < min_classes:
        raise UserError(f"{name} has {len(classes)} distinct class(es); this score needs at least {min_classes}.")
    return index.reshape(-1)


def _subsample(x: np.ndarray, max_samples: int, seed: int) -> np.ndarray:
    """At most `max_samples` rows of x: all of them, or a seeded uniform subset without replacement."""
    if int(max_samples) < 2:
        raise UserError(f"max_samples must be at least 2, got {max_samples}.")
    if len(x) <= max_samples:
        return x
    rows = np.random.default_rng(seed).choice(len(x), size=int(max_samples), replace=False)
    return x[np.sort(rows)]


def _positive(value: float, name: str) -> float:
    if not np.isfinite(value) or value <= 0:
        raise UserError(f"{name} must be a positive number, got {value}.")
    return float(value)


def _unit_rows(x: np.ndarray, name: str) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if not np.all(norms > 0):
        raise UserError(f"{name} has {int(np.sum(norms == 0))} all-zero rows, which cannot be L2-normalised; "
                        f"drop them.")
    return x / norms


# --------------------------------------------------------------------------------------------- label-free


def rankme(features: Any, eps: float = 1e-7, max_samples: int = 25_600, seed: int = 0) -> float:
    """RankMe effective rank exp(entropy(σ/‖σ‖₁ + eps)) of the [n, d] embeddings (Garrido et al., 2023)."""
    x = _subsample(_features(features), max_samples, seed)
    sigma = np.linalg.svd(x, compute_uv=False)
    if sigma.sum() <= 0:
        raise UserError("features are all zero; RankMe needs at least one non-zero singular value.")
    p = sigma / sigma.sum() + eps
    return float(np.exp(-np.sum(p * np.log(p))))


def alpha_req(features: Any, max_samples: int = 25_600, seed: int = 0) -> float:
    """α-ReQ: minus the log-log slope of the covariance eigenspectrum λ_k ∝ k^−α (Agrawal et al., 2022)."""
    x = _subsample(_features(features), max_samples, seed)
    x = x - x.mean(axis=0)
    sigma = np.linalg.svd(x, compute_uv=False)
    keep = sigma > sigma.max(initial=0.0) * max(x.shape) * np.finfo(np.float64).eps
    eigenvalues = sigma[keep] ** 2 / len(x)
    if len(eigenvalues) < 2:
        raise UserError(f"the centred features have rank {len(eigenvalues)}; α-ReQ fits a slope to the "
                        f"eigenspectrum and needs at least 2 non-zero eigenvalues.")
    slope = np.polyfit(np.log(np.arange(1, len(eigenvalues) + 1)), np.log(eigenvalues), 1)[0]
    return float(-slope)


def alignment(x: Any, y: Any, alpha: float = 2) -> float:
    """Mean ‖x̂_i − ŷ_i‖^alpha over positive pairs of L2-normalised rows (Wang & Isola, 2020); lower is better."""
    a, b = _features(x, "x", min_rows=1), _features(y, "y", min_rows=1)
    if a.shape != b.shape:
        raise UserError(f"x and y must be paired row by row with the same shape, got {a.shape} and {b.shape}.")
    alpha = _positive(alpha, "alpha")
    distances = np.linalg.norm(_unit_rows(a, "x") - _unit_rows(b, "y"), axis=1)
    return float(np.mean(distances**alpha))


def uniformity(x: Any, t: float = 2, *, max_samples: int = 4096, seed: int = 0) -> float:
    """log mean_{i<j} exp(−t ‖x̂_i − x̂_j‖²) of L2-normalised rows (Wang & Isola, 2020); lower is better.

    Uses at most `max_samples` rows (a seeded subset) because the pairs are O(n²)."""
    t = _positive(t, "t")
    points = _unit_rows(_subsample(_features(x, "x"), max_samples, seed), "x")
    squared = pdist(points, "sqeuclidean")
    return float(logsumexp(-t * squared) - np.log(len(squared)))


# ------------------------------------------------------------------------------------------------ LogME


def _evidence_terms(alpha: float, beta: float, sigma2: np.ndarray, z: np.ndarray, off_span: float):
    """(γ, ‖m‖², ‖Fm − y‖²) at (α, β) from the squared singular values and z = Uᵀy."""
    denominator = alpha + beta * sigma2
    gamma = float(np.sum(beta * sigma2 / denominator))
    m2 = float(np.sum(beta**2 * sigma2 * z**2 / denominator**2))
    residual = float(np.sum((alpha * z / denominator) ** 2) + off_span)
    return gamma, m2, residual


def _log_evidence(alpha: float, beta: float, sigma2: np.ndarray, z: np.ndarray, off_span: float, n: int,
                  d: int) -> float:
    """log p(y | F, α, β) of the Bayesian linear model, via the SVD (see the module docstring)."""
    _, m2, residual = _evidence_terms(alpha, beta, sigma2, z, off_span)
    log_det = np.sum(np.log(alpha + beta * sigma2)) + (d - len(sigma2)) * np.log(alpha)
    return float(n / 2 * np.log(beta) + d / 2 * np.log(alpha) - n / 2 * np.log(2 * np.pi)
                 - beta / 2 * residual - alpha / 2 * m2 - log_det / 2)


def _max_evidence(u: np.ndarray, sigma2: np.ndarray, d: int, y: np.ndarray) -> float:
    """max over (α, β) of the log evidence of target y, divided by n, by MacKay's fixed point."""
    n = len(y)
    z = u.T @ y
    off_span = float(np.sum((y - u @ z) ** 2))
    alpha, beta = 1.0, 1.0
    for _ in range(_LOGME_MAX_ITER):
        gamma, m2, residual = _evidence_terms(alpha, beta, sigma2, z, off_span)
        new_alpha = max(gamma, _TINY) / max(m2, _TINY)
        new_beta = max(n - gamma, _TINY) / max(residual, _TINY)
        change = max(abs(new_alpha - alpha) / alpha, abs(new_beta - beta) / beta)
        alpha, beta = new_alpha, new_beta
        if change < _LOGME_TOL:
            break
    return _log_evidence(alpha, beta, sigma2, z, off_span, n, d) / n


def _logme_per_class(features: Any, labels: Any) -> np.ndarray:
    """LogME's maximised log evidence per sample [C] of each class's one-hot target."""
    f = _features(features)
    index = _labels(labels, len(f))
    u, sigma, _ = np.linalg.svd(f, full_matrices=False)
    onehot = np.eye(index.max() + 1)[index]
    return np.array([_max_evidence(u, sigma**2, f.shape[1], onehot[:, c]) for c in range(onehot.shape[1])])


def logme(features: Any, labels: Any) -> float:
    """LogME (You et al., 2021): mean over classes of the maximised log evidence per sample; higher is better.

    Costs one thin SVD of the [n, d] features, O(n d min(n, d)); the fixed point per class is O(min(n, d)) per step.
    Meant for n > d: with n ≤ d the features fit any target exactly and the score says little."""
    return float(np.mean(_logme_per_class(features, labels)))


# ---------------------------------------------------------------------------------------- other labelled


def h_score(features: Any, labels: Any) -> float:
    """H-score (Bao et al., 2019): tr(cov(f)⁺ cov(E[f | y])), pseudo-inverse with rcond 1e-10."""
    f = _features(features)
    index = _labels(labels, len(f))
    f = f - f.mean(axis=0)
    counts = np.bincount(index)
    means = np.zeros((len(counts), f.shape[1]))
    np.add.at(means, index, f)
    means /= counts[:, None]
    between = (means * counts[:, None]).T @ means / len(f)
    eigenvalues, vectors = np.linalg.eigh(f.T @ f / len(f))
    keep = eigenvalues > _HSCORE_RCOND * eigenvalues.max(initial=0.0)
    vectors = vectors[:, keep]
    return float(np.sum(np.einsum("ik,ij,jk->k", vectors, between, vectors) / eigenvalues[keep]))


def leep(source_probabilities: Any, labels: Any) -> float:
    """LEEP (Nguyen et al., 2020): mean log-likelihood of the expected empirical predictor; higher is better."""
    theta = _features(source_probabilities, "source_probabilities", min_rows=1)
    if theta.min() < 0 or not np.allclose(theta.sum(axis=1), 1.0, rtol=0, atol=1e-3):
        raise UserError("source_probabilities must be probabilities (non-negative rows summing to 1), e.g. the "
                        "softmax of the source classifier's logits; apply softmax to logits first.")
    index = _labels(labels, len(theta))
    joint = np.zeros((index.max() + 1, theta.shape[1]))
    np.add.at(joint, index, theta / len(theta))
    marginal = joint.sum(axis=0)
    conditional = np.divide(joint, marginal, out=np.zeros_like(joint), where=marginal > 0)
    expected = np.sum(conditional[index] * theta, axis=1)
    return float(np.mean(np.log(expected)))


def nce(source_labels: Any, labels: Any) -> float:
    """NCE (Tran et al., 2019): −H(Y | Z) of target labels y given the source's hard labels z; higher is better."""
    source = _labels(source_labels, None, "source_labels", min_classes=1)
    index = _labels(labels, len(source))
    joint = np.zeros((index.max() + 1, source.max() + 1))
    np.add.at(joint, (index, source), 1.0 / len(index))
    marginal = joint.sum(axis=0, keepdims=True)
    nonzero = joint > 0
    return float(np.sum(joint[nonzero] * np.log((joint / marginal)[nonzero])))
