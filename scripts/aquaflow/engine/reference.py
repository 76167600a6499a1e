"""The drift reference of a model: a class-stratified sample of its training data through the engine.

Stored beside the model (`drift_reference.npz` + json) and attached to its training MLflow run; the
campaign drift tests (`aquaflow.monitoring.drift`) compare each campaign against it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from aquaflow.backends import load_predictor
from aquaflow.engine.infer import iter_batches
from aquaflow.io import read_json
from aquaflow.monitoring import drift, tracking

log = logging.getLogger(__name__)


def build_reference(
    manifest: pd.DataFrame,
    images_root: str | Path,
    weights: str | Path,
    card: str | Path,
    cfg: dict[str, Any],
    *,
    threads: int = 1,
    device: str = "auto",
    progress=None,
) -> dict[str, np.ndarray]:
    """Put a sample of the reference split through the inference engine; return the arrays to store.

    cfg: the `drift` config section (reference.split, reference.sample_size, pca_components, seed).
    """
    from sklearn.decomposition import PCA

    ref_cfg, seed = cfg["reference"], cfg["seed"]
    part = manifest[manifest["split"].isin(ref_cfg["splits"])]
    if part.empty:
        raise ValueError(f"drift.reference.splits {ref_cfg['splits']}: no such rows in the manifest")
    train_dist = manifest[manifest["split"] == "train"]["label"].value_counts().sort_index()
    part = drift.sample_rows(part, ref_cfg["sample_size"], seed, by="label").sort_values("id")
    inputs = pd.DataFrame(
        {"seq": np.arange(len(part)), "source": [str(Path(images_root) / p) for p in part["path"]]}
    )
    pred = load_predictor(weights, card, device, threads)
    classes = np.array(pred.card["classes"], dtype=object)
    feats, stats, labels = [], [], []
    for batch, probs, f in iter_batches(inputs, pred, 64, 0, progress=progress):
        if len(batch["index"]):
            feats.append(f.astype(np.float32))
            stats.append(batch["stats"])
            labels.append(classes[probs.argmax(1)])
    if not feats:
        raise ValueError("no reference image could be decoded")
    emb = np.concatenate(feats)
    k = int(min(cfg["pca_components"], emb.shape[1], len(emb) - 1))
    pca = PCA(n_components=k, random_state=seed).fit(emb)
    reduced = pca.transform(emb).astype(np.float32)
    log.info(
        "reference: %d images, embeddings %d -> %d (PCA, %.0f%% variance)",
        len(emb),
        emb.shape[1],
        k,
        100 * pca.explained_variance_ratio_.sum(),
    )
    return {
        "pca_mean": pca.mean_.astype(np.float32),
        "pca_components": pca.components_.astype(np.float32),
        "embeddings": reduced,
        "bandwidth": np.float64(drift.median_bandwidth(reduced, seed)),
        "stats": np.concatenate(stats).astype(np.float32),
        "predicted": np.concatenate(labels).astype(str),
        "classes": classes.astype(str),
        "train_labels": train_dist.index.to_numpy().astype(str),
        "train_counts": train_dist.to_numpy().astype(np.int64),
        "model_id": np.array(pred.card["id"]),
    }


def reference_step(
    *,
    manifest_path: str | Path,
    images_root: str | Path,
    weights: str | Path,
    card: str | Path,
    out: dict[str, str | Path],
    cfg: dict[str, Any],
    device: str = "auto",
    mlflow_cfg: dict[str, Any] | None = None,
    threads: int = 1,
    log_stream=None,
) -> dict[str, Any]:
    """The drift_reference step: build, store beside the model, attach to the training MLflow run."""
    manifest = pd.read_parquet(manifest_path)
    ref = build_reference(
        manifest, images_root, weights, card, cfg, threads=threads, device=device, progress=log_stream
    )
    meta = drift.save_reference(ref, out["reference"], out["summary"])
    if mlflow_cfg is not None:
        tracking.attach_to_training_run(
            read_json(card), [out["reference"], out["summary"]], "drift_reference", mlflow_cfg
        )
    return meta
