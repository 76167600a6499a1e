"""Classification metrics: top-k accuracy, per-class P/R/F1, macro/weighted F1, calibration error,
each with its bootstrap interval over the test images."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from aquaflow.tasks import intervals


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
    # |acc_b - conf_b| * n_b / n == |sum of correct in b - sum of confidence in b| / n
    gap = np.bincount(which, correct, bins) - np.bincount(which, conf, bins)
    return float(np.abs(gap).sum() / len(y_true))


def true_class_rank(y_true: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """0-based rank of each item's true class among its probabilities (ties: lower index first,
    as a stable sort ranks them): top-k correct is rank < k."""
    p_true = probs[np.arange(len(y_true)), y_true][:, None]
    ahead = (probs > p_true) | ((probs == p_true) & (np.arange(probs.shape[1]) < y_true[:, None]))
    return ahead.sum(axis=1)


def figures(y_true: np.ndarray, probs: np.ndarray, ks: tuple[int, ...] = (1, 3, 5)) -> dict[str, float]:
    """The headline figures and per-class P/R/F1 (`precision/<class index>` …) from one confusion
    matrix, in numpy (fast enough to be recomputed for every bootstrap resample)."""
    n_classes = probs.shape[1]
    pred = probs.argmax(axis=1)
    cm = np.bincount(y_true * n_classes + pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)
    tp, support, predicted = np.diag(cm), cm.sum(axis=1), cm.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(support > 0, tp / support, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    present = support > 0
    out = {
        "accuracy": float(tp.sum() / len(y_true)),
        "macro_f1": float(f1[present].mean()),
        "macro_f1_all_classes": float(f1.mean()),
        "weighted_f1": float(np.average(f1, weights=support)),
        "ece": expected_calibration_error(y_true, probs),
    }
    rank = true_class_rank(y_true, probs)
    for k in ks:
        if k <= n_classes:
            out[f"top{k}_accuracy"] = float((rank < k).mean())
    for i in range(n_classes):
        out |= {f"precision/{i}": precision[i], f"recall/{i}": recall[i], f"f1/{i}": f1[i]}
    return out


def classification_metrics(
    y_true: np.ndarray,
    probs: np.ndarray,
    classes: list[str],
    ks: tuple[int, ...] = (1, 3, 5),
    interval: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """All headline metrics plus the per-class table (as records) and the confusion matrix; with
    `interval` settings (resamples, level, seed) every figure gets its bootstrap interval over the
    images: an `intervals` block for the headline figures, `<figure>_low/_high` per class."""
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
    cfg = {**intervals.DEFAULTS, **(interval or {})}
    if interval is not None and cfg["resamples"] > 0 and len(y_true) > 1:
        found = intervals.bootstrap(lambda idx: figures(y_true[idx], probs[idx], ks), len(y_true), **cfg)
        for i, row in enumerate(out["per_class"]):
            for name in ("precision", "recall", "f1"):
                row[f"{name}_low"], row[f"{name}_high"] = found.pop(f"{name}/{i}")
        out["intervals"] = intervals.described(found, cfg, "test images")
    return out
