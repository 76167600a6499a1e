"""Pixel metrics of semantic segmentation: confusion matrix, per-class IoU and Dice, pixel accuracy,
and the Fractions Skill Score (Roberts & Lean 2008) at several neighbourhood sizes.

Every metric accumulates over tiles and rasters (sums, not means of means), so a campaign's figure
is the same whether its rasters are read whole or window by window. Pixels labelled NODATA_LABEL
(or outside `valid`) count nowhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from aquaflow.data.rasters import NODATA_LABEL
from aquaflow.tasks import intervals


def confusion(
    truth: np.ndarray, pred: np.ndarray, n_classes: int, valid: np.ndarray | None = None
) -> np.ndarray:
    """n_classes x n_classes pixel counts (rows: truth, columns: prediction) over valid pixels."""
    keep = (truth != NODATA_LABEL) & (truth < n_classes) & (pred < n_classes)
    if valid is not None:
        keep &= valid
    idx = truth[keep].astype(np.int64) * n_classes + pred[keep].astype(np.int64)
    return np.bincount(idx, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def scores(cm: np.ndarray, classes: Sequence[str]) -> dict[str, object]:
    """Pixel accuracy, mean IoU / Dice and per-class IoU, Dice, support from a confusion matrix
    (a class absent from truth and prediction has no IoU: NaN, left out of the means)."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    fp, fn = cm.sum(axis=0) - tp, cm.sum(axis=1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = tp / (tp + fp + fn)
        dice = 2 * tp / (2 * tp + fp + fn)
    total = cm.sum()
    return {
        "pixel_accuracy": float(tp.sum() / total) if total else float("nan"),
        "mean_iou": float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan"),
        "mean_dice": float(np.nanmean(dice)) if np.isfinite(dice).any() else float("nan"),
        "pixels": int(total),
        "per_class": {
            name: {"iou": float(iou[i]), "dice": float(dice[i]), "support": int(cm[i].sum())}
            for i, name in enumerate(classes)
        },
    }


def box_mean(field: np.ndarray, size: int) -> np.ndarray:
    """Mean of `field` over the size x size box around each pixel, zeros outside the field (the
    box of an even size reaches size//2 before and size//2 - 1 after the pixel); summed-area table."""
    if size <= 1:
        return field.astype(np.float64)
    h, w = field.shape
    table = np.zeros((h + 1, w + 1))
    table[1:, 1:] = field.astype(np.float64).cumsum(0).cumsum(1)
    lo_r = np.clip(np.arange(h) - size // 2, 0, h)
    hi_r = np.clip(np.arange(h) - size // 2 + size, 0, h)
    lo_c = np.clip(np.arange(w) - size // 2, 0, w)
    hi_c = np.clip(np.arange(w) - size // 2 + size, 0, w)
    s = table[hi_r][:, hi_c] - table[lo_r][:, hi_c] - table[hi_r][:, lo_c] + table[lo_r][:, lo_c]
    return s / (size * size)


@dataclass
class FSS:
    """Fractions Skill Score of one binary event (a class) at neighbourhood sizes `scales`,
    accumulated over fields: FSS = 1 - sum (Pf - Po)^2 / sum (Pf^2 + Po^2)."""

    scales: Sequence[int]
    sums: dict[int, np.ndarray] = field(default_factory=dict)

    def add(self, forecast: np.ndarray, observed: np.ndarray) -> None:
        """Accumulate one pair of binary fields (True = the event)."""
        for s in self.scales:
            pf, po = box_mean(forecast, s), box_mean(observed, s)
            step = np.array([((pf - po) ** 2).sum(), (pf**2 + po**2).sum()])
            self.sums[s] = self.sums.get(s, np.zeros(2)) + step

    def values(self) -> dict[int, float]:
        """FSS by scale (NaN where neither field has the event)."""
        return {s: float(1 - n / d) if d > 0 else float("nan") for s, (n, d) in self.sums.items()}


def fss(forecast: np.ndarray, observed: np.ndarray, scale: int) -> float:
    """FSS of one pair of binary fields at one neighbourhood size."""
    acc = FSS([scale])
    acc.add(forecast, observed)
    return acc.values()[scale]


@dataclass
class SemanticScores:
    """Everything the evaluation of a semantic model accumulates: the confusion matrix and, for
    each class in `fss_classes`, its FSS at `scales` (nodata pixels are not events)."""

    classes: Sequence[str]
    scales: Sequence[int]
    fss_classes: Sequence[str]
    cm: np.ndarray | None = None
    fss: dict[str, FSS] = field(default_factory=dict)
    items: list[tuple[np.ndarray, dict[str, dict[int, np.ndarray]]]] = field(default_factory=list)

    def add(self, truth: np.ndarray, pred: np.ndarray, valid: np.ndarray | None = None) -> None:
        """Accumulate one field (a raster); its own confusion and FSS sums are kept for `intervals`."""
        n = len(self.classes)
        cm = confusion(truth, pred, n, valid)
        self.cm = cm if self.cm is None else self.cm + cm
        keep = truth != NODATA_LABEL if valid is None else valid & (truth != NODATA_LABEL)
        own: dict[str, dict[int, np.ndarray]] = {}
        for name in self.fss_classes:
            k = list(self.classes).index(name)
            one = FSS(self.scales)
            one.add((pred == k) & keep, (truth == k) & keep)
            acc = self.fss.setdefault(name, FSS(self.scales))
            for s, sums in one.sums.items():
                acc.sums[s] = acc.sums.get(s, np.zeros(2)) + sums
            own[name] = one.sums
        self.items.append((cm, own))

    def _figures(self, idx: np.ndarray) -> dict[str, float]:
        """Pixel accuracy, mean IoU / Dice and every FSS of the fields at `idx` (pooled)."""
        found = scores(np.sum([self.items[i][0] for i in idx], axis=0), self.classes)
        out = {k: float(found[k]) for k in ("pixel_accuracy", "mean_iou", "mean_dice")}
        for name in self.fss_classes:
            for s in self.scales:
                num, den = np.sum([self.items[i][1][name][s] for i in idx], axis=0)
                out[f"fss_{name}_{s}"] = float(1 - num / den) if den > 0 else float("nan")
        return out

    def intervals(self, settings: dict) -> dict[str, object]:
        """The `intervals` block: percentile bootstrap over the added fields (rasters), each draw
        pooling its rasters' pixels as the figures do (none with fewer than two rasters)."""
        cfg = {**intervals.DEFAULTS, **settings}
        found = intervals.bootstrap(
            self._figures, len(self.items), cfg["resamples"], cfg["level"], cfg["seed"]
        )
        return intervals.described(found, cfg, "rasters")

    def result(self) -> dict[str, object]:
        n = len(self.classes)
        out = scores(self.cm if self.cm is not None else np.zeros((n, n)), self.classes)
        out["fss"] = {name: {str(s): v for s, v in acc.values().items()} for name, acc in self.fss.items()}
        out["confusion"] = (self.cm if self.cm is not None else np.zeros((n, n), int)).tolist()
        return out
