"""Metrics of the sound task: class accuracy, ordinal distance error in bins and km."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, f1_score

from aquaflow.tasks import intervals


def coral_outputs(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CORAL logits (n, bins-1) -> (P(bin > k), predicted bin, expected bin as a real number)."""
    above = 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64)))
    return above, (above > 0.5).sum(axis=1), above.sum(axis=1)


def bin_km(bins: np.ndarray, edges_km: list[float]) -> np.ndarray:
    """A (possibly fractional) bin -> km: linear inside the bin [edges[i], edges[i+1]); the last,
    open bin counts one bin width beyond its lower edge."""
    edges = np.asarray([*edges_km, edges_km[-1] + (edges_km[-1] - edges_km[-2])], dtype=float)
    b = np.asarray(bins, dtype=float) + 0.5  # a bin stands for its centre
    i = np.clip(np.floor(b).astype(int), 0, len(edges) - 2)
    return edges[i] + (b - i) * (edges[i + 1] - edges[i])


def figures(
    y_class: np.ndarray,
    probs: np.ndarray,
    y_bin: np.ndarray,
    expected_bin: np.ndarray,
    edges_km: list[float],
) -> dict[str, Any]:
    """accuracy and macro-F1 of the classes; RMSE / MAE of the expected distance in bins and km,
    on the windows whose distance is known (y_bin >= 0, i.e. a vessel is present)."""
    pred = probs.argmax(axis=1)
    out: dict[str, Any] = {
        "windows": len(y_class),
        "accuracy": float(accuracy_score(y_class, pred)),
        "macro_f1": float(f1_score(y_class, pred, average="macro", zero_division=0)),
    }
    known = np.asarray(y_bin) >= 0
    out["distance_windows"] = int(known.sum())
    if known.any():
        err_bins = np.asarray(expected_bin)[known] - np.asarray(y_bin)[known]
        err_km = bin_km(np.asarray(expected_bin)[known], edges_km) - bin_km(
            np.asarray(y_bin)[known], edges_km
        )
        out |= {
            "rmse_bins": float(np.sqrt(np.mean(err_bins**2))),
            "mae_bins": float(np.mean(np.abs(err_bins))),
            "rmse_km": float(np.sqrt(np.mean(err_km**2))),
            "mae_km": float(np.mean(np.abs(err_km))),
        }
    return out


COUNTS = ("windows", "distance_windows")


def figure_intervals(
    y_class: np.ndarray,
    probs: np.ndarray,
    y_bin: np.ndarray,
    expected_bin: np.ndarray,
    edges_km: list[float],
    settings: dict[str, Any],
) -> dict[str, Any]:
    """The `intervals` block of every figure of `figures` (percentile bootstrap over windows,
    aquaflow.tasks.intervals); a draw without a distance-labelled window counts as NaN there."""
    arrays = [np.asarray(a) for a in (y_class, probs, y_bin, expected_bin)]
    names = [k for k in figures(*arrays, edges_km) if k not in COUNTS]

    def statistic(idx: np.ndarray) -> dict[str, float]:
        found = figures(*(a[idx] for a in arrays), edges_km)
        return {k: found.get(k, float("nan")) for k in names}

    cfg = {**intervals.DEFAULTS, **settings}
    found = intervals.bootstrap(statistic, len(arrays[0]), cfg["resamples"], cfg["level"], cfg["seed"])
    return intervals.described(found, cfg, "windows")
