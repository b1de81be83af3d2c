"""Linear probe: multinomial logistic regression on frozen features, its L2 penalty chosen on validation.

`LinearProbe` minimises, over weights W [K, d] and biases b [K],

    (1/n) Σ_i CE(W x_i + b, y_i) + (λ/2) ‖W‖²        (b is not penalised)

with full-batch L-BFGS (strong-Wolfe line search) in float64 on any torch device. This is
scikit-learn's `LogisticRegression(C=1/(λ n))` objective, and the estimator follows its conventions
(`fit` returns self, learned state ends in `_`), so it works in a `Pipeline` or `GridSearchCV`.
`probe_with_validation` tries each λ on the validation split, keeps the best by accuracy, and refits on
train + val, as CLIP's linear-probe protocol does.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.base import BaseEstimator, ClassifierMixin


def _tensor(x, device: str) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x), dtype=torch.float64, device=device)


class LinearProbe(ClassifierMixin, BaseEstimator):
    def __init__(self, weight_decay: float = 1e-4, max_iter: int = 500, tol: float = 1e-7, device: str = "cpu"):
        self.weight_decay = weight_decay
        self.max_iter = max_iter
        self.tol = tol
        self.device = device

    def fit(self, X, y) -> LinearProbe:
        y = np.asarray(y)
        self.classes_, targets = np.unique(y, return_inverse=True)
        features = _tensor(X, self.device)
        targets = torch.as_tensor(targets, device=self.device)
        weight = torch.zeros(len(self.classes_), features.shape[1], dtype=torch.float64, device=self.device,
                             requires_grad=True)
        bias = torch.zeros(len(self.classes_), dtype=torch.float64, device=self.device, requires_grad=True)
        optimizer = torch.optim.LBFGS([weight, bias], lr=1, max_iter=self.max_iter, tolerance_grad=self.tol,
                                      tolerance_change=1e-12, history_size=20, line_search_fn="strong_wolfe")

        def objective() -> torch.Tensor:
            optimizer.zero_grad()
            loss = F.cross_entropy(features @ weight.T + bias, targets) + 0.5 * self.weight_decay * weight.pow(2).sum()
            loss.backward()
            return loss

        optimizer.step(objective)
        self.coef_ = weight.detach().cpu().numpy()
        self.intercept_ = bias.detach().cpu().numpy()
        self.n_iter_ = optimizer.state[optimizer._params[0]]["n_iter"]
        return self

    def decision_function(self, X) -> np.ndarray:
        return np.asarray(X, dtype=np.float64) @ self.coef_.T + self.intercept_

    def predict_proba(self, X) -> np.ndarray:
        return torch.softmax(torch.from_numpy(self.decision_function(X)), dim=1).numpy()

    def predict(self, X) -> np.ndarray:
        return self.classes_[self.decision_function(X).argmax(axis=1)]


def probe_with_validation(train_x, train_y, val_x, val_y, weight_decays: list[float], max_iter: int = 500,
                          device: str = "cpu") -> tuple[LinearProbe, dict[float, float]]:
    """The probe refit on train + val with the λ that scored best on val, and every λ's val accuracy."""
    scores = {wd: LinearProbe(wd, max_iter, device=device).fit(train_x, train_y).score(val_x, val_y)
              for wd in weight_decays}
    best = max(scores, key=lambda wd: (scores[wd], wd))  # ties go to the stronger penalty
    features = np.concatenate([np.asarray(train_x), np.asarray(val_x)])
    labels = np.concatenate([np.asarray(train_y), np.asarray(val_y)])
    return LinearProbe(best, max_iter, device=device).fit(features, labels), scores
