"""The evaluate step: predict a held-out split, compute metrics, draw plots, track in MLflow."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd

from . import plots, tracking
from .dataset import manifest_images_root
from .infer import Predictor, iter_batches
from .io import read_json, write_json, write_tsv
from .metrics import classification_metrics

log = logging.getLogger(__name__)


def predict_split(
    manifest: pd.DataFrame, images_root: Path, predictor: Predictor, batch_size: int, log_stream=None
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


def summary_table(metrics: dict[str, Any]) -> pd.DataFrame:
    keys = [k for k in metrics if isinstance(metrics[k], (int, float))]
    return pd.DataFrame({"metric": keys, "value": [round(float(metrics[k]), 4) for k in keys]})


def run(
    *,
    usecase: dict[str, Any],
    raw: str | Path,
    manifest_path: str | Path,
    weights: str | Path,
    card_path: str | Path,
    history_path: str | Path,
    out: dict[str, str | Path],
    mlflow_cfg: dict[str, Any],
    threads: int = 1,
    log_stream=None,
) -> dict[str, Any]:
    """Evaluate on the configured split; write metrics.json, tables and PNGs; log to MLflow."""
    card = read_json(card_path)
    split = usecase["evaluation"]["split"]
    manifest = pd.read_parquet(manifest_path)
    part = manifest[manifest["split"] == split].reset_index(drop=True)
    if part.empty:
        raise ValueError(f"the manifest has no '{split}' images to evaluate on")
    classes = card["classes"]
    index = {c: i for i, c in enumerate(classes)}
    predictor = Predictor.load(weights, card, usecase["inference"]["device"], threads)
    probs, _ = predict_split(
        part,
        manifest_images_root(raw, usecase["dataset"]),
        predictor,
        usecase["evaluation"]["batch_size"],
        log_stream,
    )
    y = part["label"].map(index).to_numpy()
    m = classification_metrics(y, probs, classes)
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
    plots.training_curve(pd.read_csv(history_path, sep="\t"), out["curve"])

    uri = tracking.tracking_uri(mlflow_cfg["tracking_uri"], mlflow_cfg["results"])
    run_id = card.get("mlflow", {}).get("run_id")
    try:
        with tracking.run(uri, mlflow_cfg["experiment"], run_id=run_id):
            mlflow.log_metrics(
                {f"{split}_{k}": v for k, v in m.items() if isinstance(v, float) and np.isfinite(v)}
            )
            mlflow.log_artifact(str(out["confusion"]), artifact_path=f"eval_{split}")
            mlflow.log_artifact(str(out["per_class"]), artifact_path=f"eval_{split}")
            mlflow.log_dict(
                {"classes": classes, "matrix": m["confusion_matrix"]}, f"eval_{split}/confusion_matrix.json"
            )
    except mlflow.exceptions.MlflowException as exc:  # e.g. another tracking server than at train
        log.warning("could not log evaluation to MLflow run %s: %s", run_id, exc)
    log.info("evaluation on %s: %s", split, {k: v for k, v in m.items() if isinstance(v, float)})
    return m
