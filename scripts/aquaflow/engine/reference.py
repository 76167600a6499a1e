"""The drift reference of a model: a sample of its training data through the engine.

Classifiers: a class-stratified sample of the prepared manifest through the classification engine
(embeddings, image statistics, predicted classes). Detectors (detect, segment, obb): a seeded sample
of the prepared detection dataset's images through the detection shard engine (image statistics and
detections per class of every image). Stored beside the model (`drift_reference.npz` + json) and
attached to its training MLflow run; the campaign drift tests (`aquaflow.monitoring.drift`) compare
each campaign against it.
"""

from __future__ import annotations

import logging
import tempfile
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

    cfg: the `drift` config section (reference.split, reference.sample_size, pca_components, seed)
    and `safe_mode` (the use case's model.safe_mode).
    """
    ref_cfg, seed = cfg["reference"], cfg["seed"]
    part = manifest[manifest["split"].isin(ref_cfg["splits"])]
    if part.empty:
        raise ValueError(f"drift.reference.splits {ref_cfg['splits']}: no such rows in the manifest")
    train_dist = manifest[manifest["split"] == "train"]["label"].value_counts().sort_index()
    part = drift.sample_rows(part, ref_cfg["sample_size"], seed, by="label").sort_values("id")
    inputs = pd.DataFrame(
        {"seq": np.arange(len(part)), "source": [str(Path(images_root) / p) for p in part["path"]]}
    )
    pred = load_predictor(weights, card, device, threads, safe_mode=cfg.get("safe_mode", True) is not False)
    classes = np.array(pred.card["classes"], dtype=object)
    feats, stats, labels = [], [], []
    for batch, probs, f in iter_batches(inputs, pred, 64, 0, progress=progress):
        if len(batch["index"]):
            feats.append(f.astype(np.float32))
            stats.append(batch["stats"])
            labels.append(classes[probs.argmax(1)])
    if not feats:
        raise ValueError("no reference image could be decoded")
    return {
        **drift.embedding_reference(np.concatenate(feats), cfg["pca_components"], seed),
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


def build_detect_reference(
    data_dir: str | Path,
    weights: str | Path,
    card: dict[str, Any],
    cfg: dict[str, Any],
    settings: dict[str, Any],
    *,
    progress=None,
) -> dict[str, np.ndarray]:
    """The detector on a seeded sample of the reference splits of a prepared detection dataset
    (`detect/data`, aquaflow.tasks.detect.formats.materialise), through the campaign shard engine.

    cfg: the `drift` section (reference.splits, reference.sample_size, seed); settings: the
    campaign prediction settings (conf, iou, imgsz, tiling, ...), so reference and campaigns agree."""
    from aquaflow.data.imaging import IMAGE_EXTENSIONS
    from aquaflow.engine import detect as engine

    data_dir, ref_cfg = Path(data_dir), cfg["reference"]
    paths = [
        p
        for split in ref_cfg["splits"]
        for p in sorted((data_dir / "images" / split).glob("*"))
        if p.suffix.lower() in IMAGE_EXTENSIONS
    ]
    if not paths:
        raise ValueError(f"drift.reference.splits {ref_cfg['splits']}: no images under {data_dir}/images")
    part = drift.sample_rows(
        pd.DataFrame({"source": [str(p) for p in paths]}), ref_cfg["sample_size"], cfg["seed"]
    )
    inputs = pd.DataFrame({"seq": np.arange(len(part)), "source": part["source"].sort_values().to_numpy()})
    classes = list(card["classes"])
    with tempfile.TemporaryDirectory() as work:
        out = {k: Path(work, f"{k}.{ext}") for k, ext in _SHARD_FILES.items()}
        summary = engine.run_shard(
            inputs,
            weights,
            card,
            out,
            settings,
            batch_size=int(settings["batch"]),
            device=settings["device"],
            progress=progress,
        )
        counts = pd.read_parquet(out["counts"])
    if counts.empty:
        raise ValueError("no reference image could be decoded")
    facts = read_json(data_dir / "dataset.json")["splits"].get("train", {}).get("per_class", {})
    log.info(
        "reference: %d images, %d detections (%s)", len(counts), summary["detections"], summary["per_class"]
    )
    return {
        "stats": counts[list(drift.STAT_COLUMNS)].to_numpy(np.float32),
        "counts": counts[[f"n_{c}" for c in classes]].to_numpy(np.int64),
        "classes": np.array(classes, dtype=str),
        "train_labels": np.array(list(facts), dtype=str),
        "train_counts": np.array(list(facts.values()), dtype=np.int64),
        "model_id": np.array(card["id"]),
    }


_SHARD_FILES = {"predictions": "parquet", "counts": "parquet", "rejected": "parquet", "summary": "json"}


def detect_reference_step(
    *,
    data_dir: str | Path,
    weights: str | Path,
    card: str | Path,
    out: dict[str, str | Path],
    cfg: dict[str, Any],
    settings: dict[str, Any],
    ultralytics_dir: str | Path,
    mlflow_cfg: dict[str, Any] | None = None,
    log_stream=None,
) -> dict[str, Any]:
    """The drift_reference_detect step: build, store beside the model, attach to the training run."""
    from aquaflow.backends.yolo import ultra

    ultra.setup(ultralytics_dir)
    card_dict = read_json(card)
    ref = build_detect_reference(data_dir, weights, card_dict, cfg, settings, progress=log_stream)
    meta = drift.save_reference(ref, out["reference"], out["summary"])
    if mlflow_cfg is not None:
        tracking.attach_to_training_run(
            card_dict, [out["reference"], out["summary"]], "drift_reference", mlflow_cfg
        )
    return meta
