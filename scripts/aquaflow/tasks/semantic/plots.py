"""Report figures of semantic segmentation: training curve and overlays (raster, truth, prediction)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from aquaflow.data.rasters import NODATA_LABEL


def training_curve(history: pd.DataFrame, path: str | Path) -> None:
    """Training loss (left) and validation mean IoU / pixel accuracy (right) per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    a.plot(history["epoch"], history["train_loss"], label="train")
    a.set_xlabel("epoch")
    a.set_ylabel("loss (CE + Dice + focal, weighted)")
    a.legend()
    for col, name in (
        ("val_mean_iou", "validation mean IoU"),
        ("val_pixel_accuracy", "validation pixel accuracy"),
    ):
        if col in history:
            b.plot(history["epoch"], history[col], label=name)
    b.set_xlabel("epoch")
    b.set_ylim(0, 1)
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def overlay(
    image: np.ndarray,
    truth: np.ndarray | None,
    pred: np.ndarray,
    classes: list[str],
    title: str,
    path: str | Path,
) -> None:
    """Band 1 in grey with the predicted classes (and the labels, when given) beside it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("raster (band 1)", None), ("prediction", pred)] + (
        [("labels", truth)] if truth is not None else []
    )
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 4.2))
    lo, hi = np.percentile(image[np.isfinite(image)], [2, 98]) if np.isfinite(image).any() else (0, 1)
    for ax, (name, cls) in zip(axes, panels, strict=True):
        ax.imshow(image, cmap="gray", vmin=lo, vmax=hi)
        if cls is not None:
            shown = np.ma.masked_where((cls == 0) | (cls == NODATA_LABEL), cls)
            ax.imshow(
                shown,
                cmap="autumn",
                alpha=0.6,
                vmin=1,
                vmax=max(len(classes) - 1, 1),
                interpolation="nearest",
            )
        ax.set_title(name)
        ax.axis("off")
    fig.suptitle(f"{title} (coloured: {', '.join(classes[1:])})")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
