"""Class balancing shared by training and preprocessing: loss weights and resampling weights."""

from __future__ import annotations

import numpy as np


def class_counts(labels: np.ndarray, num_classes: int) -> np.ndarray:
    return np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes)


def class_weights(labels: np.ndarray, num_classes: int, mode: str = "balanced") -> np.ndarray:
    """Per-class loss weights: 'balanced' = n / (k * count_c); 'log' = log(n / count_c) + 1.

    Classes absent from `labels` get weight 0 (they cannot contribute to the loss anyway).
    The weights of the present classes average to 1 under the label distribution.
    """
    counts = class_counts(labels, num_classes).astype(np.float64)
    present = counts > 0
    n, k = counts.sum(), present.sum()
    w = np.zeros(num_classes)
    if mode == "balanced":
        w[present] = n / (k * counts[present])
    elif mode == "log":
        w[present] = np.log(n / counts[present]) + 1.0
        w[present] *= n / (w[present] * counts[present]).sum()
    else:
        raise ValueError(f"unknown class weight mode {mode!r}")
    return w


def sample_weights(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Per-sample weights so that each class is drawn equally often when resampling."""
    labels = np.asarray(labels, dtype=np.int64)
    counts = class_counts(labels, num_classes).astype(np.float64)
    return 1.0 / counts[labels]


def resample_indices(labels: np.ndarray, num_classes: int, n: int, seed: int) -> np.ndarray:
    """Indices of a class-balanced resample of size n (with replacement), seeded."""
    rng = np.random.default_rng(seed)
    p = sample_weights(labels, num_classes)
    return rng.choice(len(labels), size=n, replace=True, p=p / p.sum())


def apply_overrides(
    weights: np.ndarray | None, classes: list[str], overrides: dict[str, float]
) -> np.ndarray | None:
    """Multiply per-class loss weights by explicit factors by label (e.g. {"multiple": 4}).

    `weights` None (no balancing) counts as all ones. Unknown labels are an error, so a typo in the
    config does not silently train an unweighted model. Returns None when nothing is weighted.
    """
    if not overrides:
        return weights
    unknown = sorted(set(overrides) - set(classes))
    if unknown:
        raise ValueError(f"training.class_weights names unknown class(es) {unknown}; classes: {classes}")
    w = np.ones(len(classes)) if weights is None else np.asarray(weights, np.float64).copy()
    for i, c in enumerate(classes):
        w[i] *= float(overrides.get(c, 1.0))
    return w
