"""Confidence intervals of evaluation figures: percentile bootstrap over the test items.

Every task's evaluation calls `bootstrap` with a statistic of item indices (classification: one
item per image; detection: one item per image with all its objects), so an interval means the same
thing for every task: the spread of the figure over test sets of the same size drawn from this one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

DEFAULTS = {"resamples": 1000, "level": 0.95, "seed": 0}


def bootstrap(
    statistic: Callable[[np.ndarray], Mapping[str, float]],
    n: int,
    resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, list[float]]:
    """{figure: [low, high]} of `statistic(indices)` (named figures of the items at `indices`), by
    scipy's percentile bootstrap: `resamples` draws of n indices with replacement, seeded."""
    if n < 2 or resamples < 1:
        return {}
    names = list(statistic(np.arange(n)))

    def vector(indices: np.ndarray) -> np.ndarray:
        figures = statistic(indices)
        return np.array([figures[name] for name in names], dtype=float)

    result = stats.bootstrap(
        (np.arange(n),),
        vector,
        vectorized=False,
        n_resamples=resamples,
        confidence_level=level,
        method="percentile",
        random_state=np.random.default_rng(seed),
    )
    low, high = np.atleast_1d(result.confidence_interval.low), np.atleast_1d(result.confidence_interval.high)
    return {name: [float(lo), float(hi)] for name, lo, hi in zip(names, low, high, strict=True)}


def described(intervals: dict[str, list[float]], settings: Mapping[str, Any], unit: str) -> dict[str, Any]:
    """The `intervals` block of metrics.json: how they were made, then {figure: [low, high]}."""
    cfg = {**DEFAULTS, **settings}
    return {
        "method": f"percentile bootstrap over {unit}",
        "resamples": cfg["resamples"],
        "level": cfg["level"],
        "seed": cfg["seed"],
        **intervals,
    }


def flat(intervals: Mapping[str, Any]) -> dict[str, float]:
    """{figure_low: …, figure_high: …} of an `intervals` block, for summary tables and MLflow."""
    out = {}
    for name, value in intervals.items():
        if isinstance(value, list) and len(value) == 2:
            out[f"{name}_low"], out[f"{name}_high"] = value
    return out


def summary_table(metrics: dict[str, Any]) -> pd.DataFrame:
    """metric, value and, where the figure has one, its interval (low, high)."""
    keys = [k for k in metrics if isinstance(metrics[k], (int, float))]
    found = metrics.get("intervals", {})
    table = pd.DataFrame({"metric": keys, "value": [round(float(metrics[k]), 4) for k in keys]})
    for i, side in enumerate(("low", "high")):
        table[side] = [round(found[k][i], 4) if k in found else None for k in keys]
    return table
