"""Fine-tuning as a few-shot estimator, so it sits in the same few-shot table as the heads on features.

`FineTuneClassifier` works on images, not embeddings: its X is a column of row numbers into `images` (a
uint8 bank [N, C, H, W], e.g. a dataset's train split followed by its test split). `fit` fine-tunes a copy
of `model` on the rows it is given (`transferlab.adapt.finetune.finetune`: full or LoRA, a zero-shot head);
`predict` embeds the rows it is given with the tuned model and applies the head. With `wise_alpha`, the
tuned weights and head are interpolated with the pretrained ones (WiSE-FT: (1 − α)·θ_pre + α·θ_ft, the head
from the zero-shot weights to the tuned ones) before predicting.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.base import BaseEstimator, ClassifierMixin

from transferlab.adapt.finetune import EMBED_BATCH, finetune
from transferlab.adapt.merging import interpolate
from transferlab.models.encoder import zeroshot_weights


class FineTuneClassifier(ClassifierMixin, BaseEstimator):
    def __init__(self, model=None, images=None, classnames=None, templates=None, method: str = "full",
                 wise_alpha: float | None = None, epochs: int = 10, seed: int = 0) -> None:
        self.model = model
        self.images = images
        self.classnames = classnames
        self.templates = templates
        self.method = method
        self.wise_alpha = wise_alpha
        self.epochs = epochs
        self.seed = seed

    def fit(self, X, y) -> FineTuneClassifier:
        rows = torch.as_tensor(np.asarray(X)[:, 0], dtype=torch.long)
        tuned = finetune(self.model, self.images[rows], torch.as_tensor(np.asarray(y)), classnames=self.classnames,
                         templates=self.templates, method=self.method, epochs=self.epochs, seed=self.seed,
                         progress=False)
        self.model_, weight = tuned.model, tuned.head.weight.detach()
        self.scale_ = float(tuned.head.scale)
        if self.wise_alpha is not None:
            start, alpha = self.model.saved_state_dict(), self.wise_alpha
            self.model_.load_saved_state_dict(interpolate(start, self.model_.saved_state_dict(), alpha))
            zeroshot = zeroshot_weights(self.model.encode_text, self.classnames, self.templates)
            weight = (1 - alpha) * zeroshot.to(weight.device) + alpha * weight
        self.weight_ = weight
        self.classes_ = np.arange(len(weight))
        return self

    @torch.no_grad()
    def decision_function(self, X) -> np.ndarray:
        rows = torch.as_tensor(np.asarray(X)[:, 0], dtype=torch.long)
        self.model_.eval()
        device = self.model_.logit_scale.device
        chunks = [self.model_.encode_image(self.model_.preprocess(self.images[rows[i:i + EMBED_BATCH]].to(device)))
                  for i in range(0, len(rows), EMBED_BATCH)]
        embeddings = F.normalize(torch.cat(chunks).float().cpu(), dim=-1)
        return (self.scale_ * embeddings @ self.weight_.cpu().T).numpy()

    def predict(self, X) -> np.ndarray:
        return self.classes_[self.decision_function(X).argmax(axis=1)]
