"""Gaussian discriminant analysis on frozen features, alone or ensembled with the zero-shot classifier
(Wang et al., "A hard-to-beat baseline for training-free CLIP-based adaptation", ICLR 2024).

GDA models each class as a Gaussian with its own mean and one shared covariance, x | c ~ N(μ_c, Σ). From n
features x_i [d] with classes y_i (n_c of class c, K classes) it estimates

    μ_c = (1/n_c) Σ_{y_i=c} x_i
    Σ   = Σ_c π_c · (1/n_c) Σ_{y_i=c} (x_i − μ_c)(x_i − μ_c)ᵀ        the within-class covariance
    Σ_s = (1 − s) · Σ + s · (tr Σ / d) · I                            shrunk towards its mean eigenvalue

and Bayes' rule turns them into a linear classifier, the log posterior up to a constant per sample:

    f_c(x) = x · w_c + b_c,    w_c = Σ_s⁻¹ μ_c,    b_c = −½ μ_c · Σ_s⁻¹ μ_c + log π_c

The priors π are "uniform" (1/K; the default, as few-shot draws are balanced by construction and say nothing
about the test split's class frequencies) or "empirical" (n_c / n). This is scikit-learn's
`LinearDiscriminantAnalysis(solver="lsqr", shrinkage=s, priors=π)` exactly: it also weighs each class's
biased (1/n_c) covariance by its prior, and shrinks each one before summing, which is the same as shrinking the
sum (the trace is linear). With s = 0 and a singular Σ, w is the minimum-norm least-squares solution, as there.

`shrinkage` defaults to 0.5. A few-shot Σ has n − K ≤ d degrees of freedom and is singular or close to it, so
it needs heavy shrinkage. The paper's released estimator, precision ∝ (S_w + tr(S_w)/(n − 1) · I)⁻¹ with S_w the
pooled within-class scatter, is this shrinkage with s = d / (n − 1 + d) up to a scale: 0.45 for 16 shots of 10 classes
at d = 128, 0.5 for 16 shots of 32 classes at d = 512, and above 0.5 for fewer shots. A fixed 0.5 keeps the
estimator scikit-learn's. With many shots per feature dimension a smaller s (that formula) is better.

One example per class leaves no within-class spread to measure: Σ = 0, and no shrinkage makes it invertible.
Then Σ_s = (tr T / d) · I, with T the covariance of all the examples around their common mean (an upper bound
on the within-class variance), which makes GDA a Euclidean nearest-class-mean classifier. The paper does not
meet this case: it estimates from several augmented views of every shot, which have a spread. A class with one example
among others with more contributes a zero covariance weighted by its prior, as in scikit-learn.

With `zeroshot_weights` W_zs [K, D] (rows are the classes 0..K-1) the decision function is the ensemble

    logits(x) = τ · x · W_zsᵀ + α · f(x)          τ = `zeroshot_scale`, CLIP's logit scale 100

α is chosen on (`val_x`, `val_y`) by accuracy over `alphas` (default 0 and 10^-4 … 10^2 by half decades, the
paper's decade grid 10^-4 … 10^2 refined, plus 0), ties going to the smaller α. As α = 0 is the zero-shot
classifier, the ensemble's validation accuracy is at least zero-shot's. Without a validation set α = `alpha`
(default 1: the sum of the two log posteriors, the Bayes combination of two independent, calibrated experts;
GDA's is over-confident in high dimensions, so give a validation set where you can — the few-shot task does).
"""

from __future__ import annotations

import numbers

import numpy as np
import scipy.linalg
import scipy.special
from sklearn.base import BaseEstimator, ClassifierMixin

from transferlab.adapt.inputs import as_float64, check_features, check_zeroshot_weights, softmax, validation_set
from transferlab.errors import UserError
from transferlab.models.encoder import ZEROSHOT_LOGIT_SCALE

DEFAULT_ALPHAS = (0.0, *(float(10.0 ** power) for power in np.arange(-4.0, 2.25, 0.5)))


class GDA(ClassifierMixin, BaseEstimator):
    """Gaussian discriminant analysis with a shrunk shared covariance, optionally ensembled with zero-shot.

    Attributes: `classes_`, `priors_` [K], `means_` [K, d], `covariance_` [d, d] (shrunk), `coef_` [K, d] and
    `intercept_` [K] of the GDA classifier alone, `alpha_` (the ensemble weight used; None without
    zero-shot weights), `alpha_scores_` ({α: validation accuracy}, or None), `n_features_in_`. Features are
    used as given (not normalised); without `zeroshot_weights`, `val_x` and `val_y` are not used.
    """

    def __init__(self, shrinkage: float = 0.5, priors: str = "uniform", zeroshot_weights=None,
                 zeroshot_scale: float = ZEROSHOT_LOGIT_SCALE, alpha: float = 1.0, alphas=None, val_x=None, val_y=None):
        self.shrinkage = shrinkage
        self.priors = priors
        self.zeroshot_weights = zeroshot_weights
        self.zeroshot_scale = zeroshot_scale
        self.alpha = alpha  # the ensemble weight without a validation set
        self.alphas = alphas  # the grid searched on (val_x, val_y); None: DEFAULT_ALPHAS
        self.val_x = val_x
        self.val_y = val_y

    def fit(self, X, y) -> GDA:
        if not isinstance(self.shrinkage, numbers.Real) or not 0.0 <= self.shrinkage <= 1.0:
            raise ValueError(f"shrinkage must be in [0, 1], got {self.shrinkage!r}")
        if self.priors not in ("uniform", "empirical"):
            raise ValueError(f"priors must be 'uniform' or 'empirical', got {self.priors!r}")
        X = as_float64(X)
        classes, labels, counts = np.unique(np.asarray(y), return_inverse=True, return_counts=True)
        if len(classes) < 2 or len(X) != len(labels):
            raise UserError(f"GDA needs labelled examples of at least two classes; got {len(X)} feature rows and "
                            f"{len(labels)} labels of {len(classes)} class(es).")
        n, d = X.shape
        priors = counts / n if self.priors == "empirical" else np.full(len(classes), 1.0 / len(classes))
        means = np.zeros((len(classes), d))
        np.add.at(means, labels, X)
        means /= counts[:, None]
        centered = X - means[labels]
        within = (centered * (priors[labels] / counts[labels])[:, None]).T @ centered
        total_variance = np.square(X - X.mean(axis=0)).sum() / n
        if total_variance == 0.0:
            raise UserError("GDA: all training features are identical; there is nothing to discriminate.")
        no_spread = np.trace(within) <= 1e-12 * total_variance  # one example per class
        if no_spread:
            covariance = np.eye(d) * total_variance / d
        else:
            covariance = (1.0 - self.shrinkage) * within + self.shrinkage * np.trace(within) / d * np.eye(d)
        if no_spread or self.shrinkage > 0:
            solution = scipy.linalg.solve(covariance, means.T, assume_a="pos")
        else:  # possibly singular: the minimum-norm solution, as scikit-learn's lsqr solver
            solution = scipy.linalg.lstsq(covariance, means.T)[0]
        self.classes_, self.priors_, self.means_, self.covariance_ = classes, priors, means, covariance
        self.coef_ = solution.T
        self.intercept_ = -0.5 * np.einsum("kd,kd->k", means, self.coef_) + np.log(priors)
        self.n_features_in_ = d
        self.alpha_, self.alpha_scores_ = None, None
        if self.zeroshot_weights is not None:
            self.zeroshot_weights_ = check_zeroshot_weights(self.zeroshot_weights, classes, X, "GDA")
            self.alpha_ = float(self.alpha)
            val = validation_set(self.val_x, self.val_y, len(classes), "GDA")
            if val is not None:
                self._choose_alpha(*val)
        return self

    def _choose_alpha(self, features: np.ndarray, labels: np.ndarray) -> None:
        features = check_features(self, features)
        alphas = np.asarray(DEFAULT_ALPHAS if self.alphas is None else self.alphas, dtype=np.float64)
        zeroshot = self.zeroshot_scale * features @ self.zeroshot_weights_.T
        gda = features @ self.coef_.T + self.intercept_
        predictions = (zeroshot[None] + alphas[:, None, None] * gda[None]).argmax(axis=2)
        accuracies = (predictions == labels[None]).mean(axis=1)
        self.alpha_scores_ = dict(zip(alphas.tolist(), accuracies.tolist(), strict=True))
        self.alpha_ = float(alphas[accuracies == accuracies.max()].min())

    def decision_function(self, X) -> np.ndarray:
        """Scores [n, K]: f(x), or τ·x·W_zsᵀ + α·f(x) with zero-shot weights."""
        X = check_features(self, X)
        scores = X @ self.coef_.T + self.intercept_
        if self.alpha_ is None:
            return scores
        return self.zeroshot_scale * X @ self.zeroshot_weights_.T + self.alpha_ * scores

    def predict_proba(self, X) -> np.ndarray:
        return softmax(self.decision_function(X))

    def predict(self, X) -> np.ndarray:
        return self.classes_[self.decision_function(X).argmax(axis=1)]
