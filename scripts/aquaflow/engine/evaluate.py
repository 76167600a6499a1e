"""The evaluate step: predict a held-out split, compute metrics, draw plots, track in MLflow."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from aquaflow import plots
from aquaflow.backends import load_predictor
from aquaflow.engine.infer import iter_batches
from aquaflow.io import read_json, write_json, write_tsv
from aquaflow.monitoring import tracking
from aquaflow.tasks import intervals
from aquaflow.tasks.classify.metrics import classification_metrics
from aquaflow.tasks.intervals import summary_table

log = logging.getLogger(__name__)


def predict_split(
    manifest: pd.DataFrame, images_root: Path, predictor: Any, batch_size: int, log_stream=None
) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities for every manifest row, in manifest order (all rows must decode)."""
    inputs = pd.DataFrame(
        {"seq": np.arange(len(manifest)), "source": [str(images_root / p) for p in manifest["path"]]}
    )
    probs = np.zeros((len(manifest), len(predictor.card["classes"])), np.float32)
    for batch, p, _ in iter_batches(inputs, predictor, batch_size, 0, progress=log_stream):
        if batch["rejected"]:
            raise RuntimeError(f"evaluation images could not be read: {batch['rejected'][:3]}")
        probs[batch["index"]] = p
    return probs, inputs["seq"].to_numpy()


def run(
    *,
    settings: dict[str, Any],
    raw: str | Path,
    manifest_path: str | Path,
    weights: str | Path,
    card_path: str | Path,
    out: dict[str, str | Path],
    mlflow_cfg: dict[str, Any],
    threads: int = 1,
    log_stream=None,
) -> dict[str, Any]:
    """Evaluate on the configured split; write metrics.json, tables and PNGs; log to MLflow.

    `settings`: the evaluation section plus `images` (dataset folder), `device` and `safe_mode`
    (the use case's model.safe_mode).
    """
    card = read_json(card_path)
    split = settings["split"]
    manifest = pd.read_parquet(manifest_path)
    part = manifest[manifest["split"] == split].reset_index(drop=True)
    if part.empty:
        raise ValueError(f"the manifest has no '{split}' images to evaluate on")
    classes = card["classes"]
    unknown = sorted(set(part["label"]) - set(classes))
    if unknown:
        raise ValueError(
            f"the {split} split has labels the model does not know: {unknown} (model classes: {classes})"
        )
    index = {c: i for i, c in enumerate(classes)}
    predictor = load_predictor(
        weights, card, settings["device"], threads, safe_mode=settings.get("safe_mode", True) is not False
    )
    probs, _ = predict_split(
        part, Path(raw) / settings["images"], predictor, settings["batch_size"], log_stream
    )
    y = part["label"].map(index).to_numpy()
    m = classification_metrics(y, probs, classes, interval=settings.get("intervals", {}))
    m.update({"split": split, "model_id": card["id"]})
    write_json(m, out["metrics"])
    write_tsv(summary_table(m), out["summary"])
    write_tsv(pd.DataFrame(m["per_class"]), out["per_class"])
    plots.confusion_matrix(
        np.array(m["confusion_matrix"]),
        classes,
        out["confusion"],
        title=f"Confusion matrix, {split} split (n={m['n']})",
    )

    tracking.log_evaluation(
        card,
        {f"{split}_{k}": v for k, v in {**m, **intervals.flat(m.get("intervals", {}))}.items()},
        f"eval_{split}",
        mlflow_cfg,
        files=[out["confusion"], out["per_class"]],
        dicts={"confusion_matrix.json": {"classes": classes, "matrix": m["confusion_matrix"]}},
    )
    log.info("evaluation on %s: %s", split, {k: v for k, v in m.items() if isinstance(v, float)})
    return m
