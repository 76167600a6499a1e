"""Report figure of a detection training run: losses and validation mAP per epoch."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from aquaflow.plots import _save, plt


def training_curve(history: pd.DataFrame, path: str | Path) -> None:
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    for col in [c for c in history.columns if c.startswith("train/")]:
        a.plot(history["epoch"], history[col], label=col.split("/", 1)[1])
    a.set_xlabel("epoch")
    a.set_ylabel("training loss")
    a.legend(fontsize=8)
    for col in [c for c in history.columns if c.startswith("metrics/")]:
        if history[col].notna().any():
            b.plot(history["epoch"], history[col], label=col.split("/", 1)[1])
    b.set_ylim(0, 1.02)
    b.set_xlabel("epoch")
    b.set_ylabel("validation (Ultralytics)")
    b.legend(fontsize=8)
    _save(fig, path)
