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
    return store(ref, read_json(card), out, mlflow_cfg)


def store(
    ref: dict[str, np.ndarray],
    card: dict[str, Any],
    out: dict[str, str | Path],
    mlflow_cfg: dict[str, Any] | None,
) -> dict[str, Any]:
    """Save a reference beside the model (out[reference|summary]) and attach it to the model's
    training MLflow run (when there is one); returns its summary."""
    meta = drift.save_reference(ref, out["reference"], out["summary"])
    if mlflow_cfg is not None:
        tracking.attach_to_training_run(
            card, [out["reference"], out["summary"]], "drift_reference", mlflow_cfg
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
    return store(ref, card_dict, out, mlflow_cfg)


def build_semantic_reference(
    manifest_path: str | Path,
    weights: str | Path,
    card: dict[str, Any],
    cfg: dict[str, Any],
    settings: dict[str, Any],
    threads: int = 1,
) -> dict[str, np.ndarray]:
    """A semantic model on a seeded sample of the reference splits' rasters (`drift.reference`),
    through the campaign shard engine and gather: the pooled pixel samples per band, the predicted
    class cover per raster and the label pixels per class (the training class distribution)."""
    from aquaflow.engine import semantic

    manifest = pd.read_parquet(manifest_path)
    rows = manifest[manifest["split"].isin(cfg["reference"]["splits"])]
    if rows.empty:
        raise ValueError(f"drift.reference.splits {cfg['reference']['splits']}: no raster in {manifest_path}")
    part = drift.sample_rows(rows, cfg["reference"]["sample_size"], cfg["seed"]).sort_values("id")
    classes, bands = list(card["classes"]), list(card["bands"])
    with tempfile.TemporaryDirectory() as work:
        inputs = Path(work, "inputs.parquet")
        part.assign(path=part["image"], labels=None)[["id", "path", "labels"]].to_parquet(inputs)
        shard = Path(work, "shard.json")
        semantic.run_shard(
            inputs_path=inputs,
            weights=weights,
            card_path=card,
            scatteritem="1-of-1",
            settings={**settings, "fss_scales": [], "fss_classes": []},
            out_dir=Path(work, "rasters"),
            out_summary=shard,
            threads=threads,
        )
        names = {"predictions": "parquet", "rejected": "parquet", "summary": "json", "table": "tsv"}
        out = {k: Path(work, f"{k}.{ext}") for k, ext in names.items()}
        semantic.gather(
            inputs_path=inputs,
            summaries=[shard],
            shard_dirs=[Path(work, "rasters")],
            classes=classes,
            out=out,
        )
        preds = pd.read_parquet(out["predictions"])
    if preds.empty:
        raise ValueError("no reference raster could be read")
    labelled = np.zeros(len(classes), np.int64)
    for path in part["labels"]:
        labelled += semantic.label_pixels(path, len(classes))
    log.info(
        "reference: %d rasters, mean predicted cover %s", len(preds), drift.cover_of(preds, classes).mean(0)
    )
    return {
        "pixels": drift.pooled_pixels(preds, bands).astype(np.float32),
        "cover": drift.cover_of(preds, classes),
        "bands": np.array(bands, dtype=np.int64),
        "classes": np.array(classes, dtype=str),
        "train_labels": np.array(classes, dtype=str),
        "train_counts": labelled,
        "model_id": np.array(card["id"]),
    }


def semantic_reference_step(
    *,
    manifest: str | Path,
    weights: str | Path,
    card: str | Path,
    out: dict[str, str | Path],
    cfg: dict[str, Any],
    settings: dict[str, Any],
    mlflow_cfg: dict[str, Any] | None = None,
    threads: int = 1,
) -> dict[str, Any]:
    """The drift_reference_semantic step: build, store beside the model, attach to the training run."""
    card_dict = read_json(card)
    ref = build_semantic_reference(manifest, weights, card_dict, cfg, settings, threads)
    return store(ref, card_dict, out, mlflow_cfg)
