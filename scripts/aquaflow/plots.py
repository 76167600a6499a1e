"""Report figures (matplotlib, Agg backend): confusion matrix and training curves."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from aquaflow.io import atomic_path


def _save(fig, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)


def confusion_matrix(cm: np.ndarray, classes: list[str], path: str | Path, title: str) -> None:
    """Row-normalised colours with the raw counts written in each cell."""
    cm = np.asarray(cm)
    n = len(classes)
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm, dtype=float), where=rows > 0)
    side = max(4.0, 0.45 * n + 2.5)
    fig, ax = plt.subplots(figsize=(side, side))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), classes, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(n), classes, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if n <= 40:
        for i in range(n):
            for j in range(n):
                if cm[i, j]:
                    ax.text(
                        j,
                        i,
                        str(cm[i, j]),
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if norm[i, j] > 0.5 else "black",
                    )
    _save(fig, path)


def training_curve(history: pd.DataFrame, path: str | Path) -> None:
    """Loss (left) and validation accuracy / macro-F1 (right) per epoch."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    a.plot(history["epoch"], history["train_loss"], label="train")
    a.plot(history["epoch"], history["val_loss"], label="validation")
    a.set_xlabel("epoch")
    a.set_ylabel("cross-entropy")
    a.legend()
    b.plot(history["epoch"], history["train_acc"], label="train accuracy")
    b.plot(history["epoch"], history["val_acc"], label="validation accuracy")
    b.plot(history["epoch"], history["val_macro_f1"], label="validation macro-F1")
    b.set_ylim(0, 1.02)
    b.set_xlabel("epoch")
    b.legend()
    _save(fig, path)


def before_after_counts(
    counts: pd.DataFrame, sizes: pd.DataFrame, path: str | Path, unit: str = "mm"
) -> None:
    """Objects per sample before/after a correction (bars, left) and their size spectra (right).

    counts: index = sample, columns `before`, `after`; sizes: columns `sample`, `stage`
    (before / after), `size` (e.g. ESD)."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    x = np.arange(len(counts))
    a.bar(x - 0.2, counts["before"], 0.4, label="before")
    a.bar(x + 0.2, counts["after"], 0.4, label="after")
    a.set_xticks(x, counts.index.astype(str), rotation=45, ha="right", fontsize=8)
    a.set_ylabel("objects")
    a.legend()
    positive = sizes["size"][sizes["size"] > 0]
    if len(positive):
        lo, hi = float(positive.min()), float(positive.max())
        bins = np.geomspace(lo, hi * 1.0001, 16) if hi > lo else np.array([lo * 0.9, hi * 1.1])
        for i, (sample, rows) in enumerate(sizes.groupby("sample")):
            for stage, style in (("before", "--"), ("after", "-")):
                h, _ = np.histogram(rows.loc[rows["stage"] == stage, "size"], bins)
                mid = np.sqrt(bins[:-1] * bins[1:])
                b.plot(mid, h, style, color=f"C{i % 10}", label=f"{sample} {stage}")
        b.set_xscale("log")
    b.set_xlabel(f"size ({unit})")
    b.set_ylabel("objects per size class")
    b.legend(fontsize=7, ncol=2)
    _save(fig, path)
