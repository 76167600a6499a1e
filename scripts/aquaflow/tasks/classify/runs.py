"""The MLflow training run of a classifier (torch or Keras): what both trainers add to the shared
`tracking.log_training` call: the validation confusion matrix and the classifier's parameters."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from aquaflow import plots
from aquaflow.io import write_json
from aquaflow.models.artifacts import write_card
from aquaflow.monitoring import tracking


def write_confusion(
    matrix: list[list[int]], classes: list[str], folder: str | Path, name: str, title: str
) -> list[Path]:
    """A confusion matrix as `<name>.png` (figure) and `<name>.json` ({classes, matrix}) in folder."""
    folder = Path(folder)
    figure, table = folder / f"{name}.png", folder / f"{name}.json"
    plots.confusion_matrix(np.array(matrix), classes, figure, title=title)
    write_json({"classes": classes, "matrix": matrix}, table)
    return [figure, table]


def log_classifier_training(
    *,
    usecase: str,
    card: dict[str, Any],
    out: dict[str, str | Path],
    settings: dict[str, Any],
    images: int,
    history: pd.DataFrame,
    val_metrics: dict[str, Any],
    best: dict[str, float],
    mlflow_cfg: dict[str, Any],
    started: float,
) -> dict[str, Any]:
    """tracking.log_training for a classifier: params {model, training, classes, images}, the best
    epoch's figures (`best`) and the validation confusion matrix beside the training curve."""
    classes = card["classes"]
    with tempfile.TemporaryDirectory() as work:
        confusion = write_confusion(
            val_metrics["confusion_matrix"],
            classes,
            work,
            "val_confusion_matrix",
            "Validation confusion matrix (best epoch)",
        )
        return tracking.log_training(
            usecase=usecase,
            card=card,
            card_path=out["card"],
            weights=out["weights"],
            params={
                "model": settings["model"],
                "training": settings["training"],
                "classes": len(classes),
                "images": images,
            },
            history=history,
            mlflow_cfg=mlflow_cfg,
            metrics=best,
            artifacts=[*confusion, out["curve"]],
            started=started,
            write_card=write_card,
        )
