"""Input checks and conversions shared by the feature-level adaptation methods (GDA, Tip-Adapter, the
zero-shot-initialised probe): features as float64, zero-shot class weights and validation sets checked
against the classes seen, with errors that say what to pass instead."""

from __future__ import annotations

import numpy as np
import scipy.special
import torch
from sklearn.utils.validation import check_is_fitted

from transferlab.errors import UserError


def as_float64(X) -> np.ndarray:
    """Features [n, d] as a float64 NumPy array, from NumPy or a torch tensor on any device."""
    if isinstance(X, torch.Tensor):
        X = X.detach().cpu().double().numpy()
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise UserError(f"Features must be a 2-D array [samples, dimensions]; got shape {X.shape}.")
    return X


def check_zeroshot_weights(weights, classes: np.ndarray, features: np.ndarray, owner: str) -> np.ndarray:
    """The zero-shot class weights [K, D] as float64, checked against the features and the classes seen."""
    if weights is None:
        raise UserError(f"{owner} needs zeroshot_weights: the zero-shot class weights [K, D] of the model that "
                        f"embedded the features (transferlab.models.encoder.zeroshot_weights), row c for class c. "
                        f"Pass {owner}(zeroshot_weights=W).")
    weights = as_float64(weights)
    if weights.shape[1] != features.shape[1]:
        raise UserError(f"{owner}: zeroshot_weights has shape {weights.shape} but the features have shape "
                        f"{features.shape}; their dimensions must match. Compute the class weights with the text tower "
                        f"of the model that embedded these features.")
    if not np.array_equal(classes, np.arange(len(weights))):
        shown = classes if len(classes) <= 12 else f"{len(classes)} classes from {classes[0]} to {classes[-1]}"
        raise UserError(f"{owner}: zeroshot_weights has {len(weights)} rows (classes) but the training labels are "
                        f"{shown}. Labels must be the class indices 0..{len(weights) - 1}, one per row of "
                        f"zeroshot_weights, with at least one training example of every class.")
    return weights


def check_features(estimator, X) -> np.ndarray:
    """Features to score, checked against the dimension seen in fit."""
    check_is_fitted(estimator)
    X = as_float64(X)
    if X.shape[1] != estimator.n_features_in_:
        raise UserError(f"{type(estimator).__name__} was fitted on {estimator.n_features_in_}-dimensional features but "
                        f"got features of shape {X.shape}. Score features of the same model that it was fitted on.")
    return X


def validation_set(val_x, val_y, n_classes: int, owner: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(features, labels) of the validation set, or None when there is none."""
    if val_x is None and val_y is None:
        return None
    if val_x is None or val_y is None:
        raise UserError(f"{owner}: give both val_x and val_y, or neither.")
    features, labels = as_float64(val_x), np.asarray(val_y)
    if len(features) != len(labels) or len(labels) == 0:
        raise UserError(f"{owner}: val_x has {len(features)} rows but val_y has {len(labels)} labels; they must be "
                        f"equally long and not empty.")
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 or labels.max() >= n_classes:
        raise UserError(f"{owner}: val_y must hold class indices 0..{n_classes - 1}, the rows of zeroshot_weights.")
    return features, labels


def softmax(logits: np.ndarray) -> np.ndarray:
    return scipy.special.softmax(logits, axis=1)
