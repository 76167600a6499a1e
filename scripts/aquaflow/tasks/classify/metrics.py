"""Classification metrics: top-k accuracy, per-class P/R/F1, macro/weighted F1, calibration error."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support


def top_k_accuracy(y_true: np.ndarray, probs: np.ndarray, k: int) -> float:
    """Share of items whose true class is among the k most probable (ties broken by index)."""
    if len(y_true) == 0:
        return float("nan")
    k = min(k, probs.shape[1])
    top = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return float((top == np.asarray(y_true)[:, None]).any(axis=1).mean())


def expected_calibration_error(y_true: np.ndarray, probs: np.ndarray, bins: int = 15) -> float:
    """ECE with equal-width confidence bins: sum_b |acc_b - conf_b| * n_b / n."""
    if len(y_true) == 0:
        return float("nan")
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == np.asarray(y_true)).astype(float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        sel = which == b
        if sel.any():
            ece += abs(correct[sel].mean() - conf[sel].mean()) * sel.mean()
    return float(ece)


def classification_metrics(
    y_true: np.ndarray, probs: np.ndarray, classes: list[str], ks: tuple[int, ...] = (1, 3, 5)
) -> dict[str, Any]:
    """All headline metrics plus the per-class table (as records) and the confusion matrix."""
    y_true = np.asarray(y_true, dtype=np.int64)
    labels = list(range(len(classes)))
    pred = probs.argmax(axis=1) if len(probs) else np.array([], dtype=np.int64)
    p, r, f, s = precision_recall_fscore_support(y_true, pred, labels=labels, zero_division=0)
    _, _, macro_f1, _ = precision_recall_fscore_support(
        y_true, pred, labels=labels, average="macro", zero_division=0
    )
    present = s > 0  # macro-F1 over classes that occur in this split
    per_class = pd.DataFrame(
        {"class": classes, "precision": p, "recall": r, "f1": f, "support": s.astype(int)}
    )
    out: dict[str, Any] = {
        "n": len(y_true),
        "accuracy": float((pred == y_true).mean()) if len(y_true) else float("nan"),
        "macro_f1": float(f[present].mean()) if present.any() else float("nan"),
        "macro_f1_all_classes": float(macro_f1),
        "weighted_f1": float(np.average(f, weights=s)) if s.sum() else float("nan"),
        "ece": expected_calibration_error(y_true, probs),
        "per_class": per_class.to_dict(orient="records"),
        "confusion_matrix": confusion_matrix(y_true, pred, labels=labels).tolist(),
    }
    for k in ks:
        if k <= len(classes):
            out[f"top{k}_accuracy"] = top_k_accuracy(y_true, probs, k)
    return out
