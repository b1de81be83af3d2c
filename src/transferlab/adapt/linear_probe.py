"""Linear probe: multinomial logistic regression on frozen features, its L2 penalty chosen on validation.

`LinearProbe` minimises, over weights W [K, d] and biases b [K],

    (1/n) Σ_i CE(W x_i + b, y_i) + (λ/2) ‖W‖²        (b is not penalised)

with scipy's L-BFGS-B driving a float64 torch objective and gradient on any torch device (the features
stay on the device; only the parameter vector crosses). This is scikit-learn's
`LogisticRegression(C=1/(λ n))` objective, solved to a tighter tolerance than its default, and the
estimator follows its conventions (`fit` returns self, learned state ends in `_`, `warm_start`), so it works
in a `Pipeline` or `GridSearchCV`. `probe_with_validation` tries each λ on the validation split, from the
strongest penalty down with warm starts, keeps the best by accuracy, and refits on train + val, as CLIP's
linear-probe protocol does.
"""

from __future__ import annotations

import numpy as np
import scipy.optimize
import torch
import torch.nn.functional as F
from sklearn.base import BaseEstimator, ClassifierMixin


class LinearProbe(ClassifierMixin, BaseEstimator):
    def __init__(self, weight_decay: float = 1e-4, max_iter: int = 1000, tol: float = 1e-8,
                 warm_start: bool = False, device: str = "cpu", dtype: str = "float64"):
        self.weight_decay = weight_decay
        self.max_iter = max_iter
        self.tol = tol  # stop at max |gradient| < tol, or a relative objective change < tol · 1e-4
        self.warm_start = warm_start
        self.device = device
        self.dtype = dtype  # float32 halves the cost of a loose fit (a λ sweep); float64 for exact ones

    def fit(self, X, y) -> LinearProbe:
        y = np.asarray(y)
        classes, targets = np.unique(y, return_inverse=True)
        dtype = getattr(torch, self.dtype)
        # a copy in torch's own (64-byte aligned) memory: BLAS float32 results depend on the buffer's alignment,
        # and the same features read from a cache file or sliced from an array must give the same fit
        features = torch.tensor(np.asarray(X), dtype=dtype, device=self.device)
        targets = torch.as_tensor(targets, device=self.device)
        k, d = len(classes), features.shape[1]
        start = np.zeros(k * d + k)
        if self.warm_start and getattr(self, "coef_", None) is not None and np.array_equal(self.classes_, classes) \
                and self.coef_.shape == (k, d):
            start = np.concatenate([self.coef_.ravel(), self.intercept_])

        def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
            params = torch.tensor(theta, dtype=dtype, device=self.device, requires_grad=True)
            weight, bias = params[: k * d].view(k, d), params[k * d:]
            loss = F.cross_entropy(features @ weight.T + bias, targets) + 0.5 * self.weight_decay * weight.pow(2).sum()
            loss.backward()
            return loss.item(), params.grad.cpu().double().numpy()

        result = scipy.optimize.minimize(objective, start, jac=True, method="L-BFGS-B",
                                         options={"maxiter": self.max_iter, "gtol": self.tol, "ftol": self.tol * 1e-4})
        self.classes_ = classes
        self.coef_ = result.x[: k * d].reshape(k, d)
        self.intercept_ = result.x[k * d:]
        self.n_iter_ = result.nit
        return self

    def decision_function(self, X) -> np.ndarray:
        return np.asarray(X, dtype=np.float64) @ self.coef_.T + self.intercept_

    def predict_proba(self, X) -> np.ndarray:
        return torch.softmax(torch.from_numpy(self.decision_function(X)), dim=1).numpy()

    def predict(self, X) -> np.ndarray:
        return self.classes_[self.decision_function(X).argmax(axis=1)]


REFINE_STEPS = (-0.5, -0.25, 0.25, 0.5)  # in decades around the best coarse penalty


def probe_with_validation(train_x, train_y, val_x, val_y, weight_decays: list[float], max_iter: int = 1000,
                          device: str = "cpu", refine: bool = True,
                          sweep_tol: float = 1e-4) -> tuple[LinearProbe, dict[float, float]]:
    """The probe refit on train + val with the λ that scored best on val, and every λ's val accuracy.

    The coarse grid `weight_decays` is swept from the strongest penalty down, each fit warm-started from
    the last (strong penalties converge fast); with `refine`, λ·10^±0.25 and λ·10^±0.5 around the best
    coarse λ are tried as well. Ties go to the stronger penalty. Sweep fits stop at `sweep_tol` (enough to
    rank penalties by validation accuracy); the final fit on train + val, warm-started from the best sweep
    fit, is solved to the estimator's full tolerance.
    """
    sweep = LinearProbe(max_iter=max_iter, tol=sweep_tol, warm_start=True, device=device,
                        dtype="float32" if sweep_tol >= 1e-5 else "float64")
    solutions: dict[float, tuple[np.ndarray, np.ndarray]] = {}

    def score(penalties) -> dict[float, float]:
        scores = {}
        for wd in sorted(penalties, reverse=True):
            scores[wd] = sweep.set_params(weight_decay=wd).fit(train_x, train_y).score(val_x, val_y)
            solutions[wd] = (sweep.coef_, sweep.intercept_)
        return scores

    scores = score(weight_decays)
    if refine:
        coarse = max(scores, key=lambda wd: (scores[wd], wd))
        scores.update(score([coarse * 10 ** step for step in REFINE_STEPS]))
    best = max(scores, key=lambda wd: (scores[wd], wd))
    final = LinearProbe(best, max_iter, warm_start=True, device=device)
    final.classes_, (final.coef_, final.intercept_) = sweep.classes_, solutions[best]
    features = np.concatenate([np.asarray(train_x), np.asarray(val_x)])
    labels = np.concatenate([np.asarray(train_y), np.asarray(val_y)])
    return final.fit(features, labels), scores
