"""The linear probe (`transferlab.adapt.linear_probe`) started from the zero-shot classifier instead of
from zero: the few-shot baseline of CLIP-style adaptation papers that keeps what the text tower knows."""

from __future__ import annotations

import numpy as np

from transferlab.adapt.inputs import as_float64, check_zeroshot_weights
from transferlab.adapt.linear_probe import LinearProbe
from transferlab.models.encoder import ZEROSHOT_LOGIT_SCALE


class ZeroShotInitProbe(LinearProbe):
    """The L-BFGS linear probe started at the zero-shot classifier: W₀ = τ · W_zs, b₀ = 0.

    τ = `zeroshot_scale` (CLIP's logit scale 100) makes the starting logits exactly zero-shot CLIP's on
    normalised features, calibrated temperature included; started from unscaled W_zs the softmax would be nearly
    uniform and the first iterations would only rescale. The objective is `LinearProbe`'s, (1/n) Σ CE + λ/2 ‖W‖²
    (the penalty pulls towards 0, not towards W_zs), so for λ > 0 the optimum is unique and the start only
    changes the path: the bias starts at 0 and its gradient sums to 0 over classes, so it stays in the
    identifiable subspace Σ_c b_c = 0 from either start. `max_iter=0` returns the start itself (scipy's L-BFGS-B
    would take one step). Labels are the class indices 0..K-1 of the rows of `zeroshot_weights`.
    """

    def __init__(self, zeroshot_weights=None, zeroshot_scale: float = ZEROSHOT_LOGIT_SCALE, weight_decay: float = 1e-4,
                 max_iter: int = 1000, tol: float = 1e-8, device: str = "cpu", dtype: str = "float64"):
        self.zeroshot_weights = zeroshot_weights
        self.zeroshot_scale = zeroshot_scale
        self.weight_decay = weight_decay
        self.max_iter = max_iter
        self.tol = tol
        self.device = device
        self.dtype = dtype

    def fit(self, X, y) -> ZeroShotInitProbe:
        features = as_float64(X)
        classes = np.unique(np.asarray(y))
        weights = check_zeroshot_weights(self.zeroshot_weights, classes, features, "ZeroShotInitProbe")
        probe = LinearProbe(self.weight_decay, self.max_iter, self.tol, warm_start=True, device=self.device,
                            dtype=self.dtype)
        probe.classes_, probe.coef_, probe.intercept_ = classes, self.zeroshot_scale * weights, np.zeros(len(classes))
        probe.n_iter_ = 0
        if self.max_iter > 0:
            probe.fit(features, y)
        self.classes_, self.coef_, self.intercept_, self.n_iter_ = probe.classes_, probe.coef_, probe.intercept_, \
            probe.n_iter_
        self.n_features_in_ = features.shape[1]
        return self
