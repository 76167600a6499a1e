"""The shard engine: decode in DataLoader workers, batched forward, Parquet row groups, nothing lost.

Every input row ends in exactly one of the predictions or the rejected table. Outputs are written
to temporary files and renamed at the end, so a killed job leaves no partial shard behind.
"""

from __future__ import annotations

import collections
import hashlib
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from torch.utils.data import DataLoader
from tqdm import tqdm

from aquaflow.backends import load_predictor
from aquaflow.backends import torch_model as models
from aquaflow.data import imaging
from aquaflow.data.inputs import source_paths
from aquaflow.engine.items import CROP_COLUMNS, REJECTED_SCHEMA, Items, collate, crop_of, prefetched
from aquaflow.io import atomic_path, sha256_file, write_json
from aquaflow.monitoring import drift

log = logging.getLogger(__name__)

ROW_GROUP = 8192


def iter_batches(
    inputs: pd.DataFrame,
    predictor: Any,
    batch_size: int,
    workers: int,
    max_pixels: int = imaging.DEFAULT_MAX_PIXELS,
    progress=None,
    read_paths: list | None = None,
) -> Iterator[tuple[dict[str, Any], np.ndarray, np.ndarray]]:
    """Yield (batch, probs, features) per DataLoader batch; rejected rows ride along in batch.

    `read_paths`: where to read each row's file when it is not `source` (a staged copy)."""
    crops = [None] * len(inputs)
    if "crop_x" in inputs.columns:
        crops = [crop_of(r) for r in inputs[list(CROP_COLUMNS)].to_dict("records")]
    card = predictor.card
    reads = read_paths if read_paths is not None else source_paths(inputs)
    ds = Items(reads, crops, card["input_size"], max_pixels, card.get("resize", "letterbox"))
    loader = DataLoader(
        ds,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=collate,
        pin_memory=predictor.device.type == "cuda",
        prefetch_factor=4 if workers else None,
        persistent_workers=False,
    )
    batches = loader if workers else prefetched(loader)
    for batch in tqdm(batches, total=len(loader), file=progress, mininterval=10.0, desc="batches"):
        if len(batch["index"]):
            probs, feats = predictor(batch["images"])
        else:
            probs = np.zeros((0, len(predictor.card["classes"])), np.float32)
            feats = np.zeros((0, 0), np.float32)
        yield batch, probs, feats


def prediction_schema(top_k: int, meta: pa.Schema, embed_dim: int | None) -> pa.Schema:
    fields = [pa.field("seq", pa.int64()), pa.field("id", pa.string()), pa.field("source", pa.string())]
    fields += [f for f in meta]
    for k in range(1, top_k + 1):
        fields += [pa.field(f"top{k}_label", pa.string()), pa.field(f"top{k}_prob", pa.float32())]
    fields += [pa.field("model_id", pa.string()), pa.field("run_id", pa.string())]
    if embed_dim:
        fields.append(pa.field("embedding", pa.list_(pa.float32(), embed_dim)))
        fields += [pa.field(c, pa.float32()) for c in drift.STAT_COLUMNS]  # drift hook (issue 11)
    return pa.schema(fields)


def run_shard(
    inputs: pd.DataFrame,
    weights: str | Path,
    card: str | Path,
    predictions_path: str | Path,
    rejected_path: str | Path,
    summary_path: str | Path,
    *,
    top_k: int = 5,
    batch_size: int = 256,
    workers: int = 1,
    threads: int = 1,
    device: str = "auto",
    embeddings: bool = False,
    max_pixels: int = imaging.DEFAULT_MAX_PIXELS,
    run_id: str = "",
    backend: str = "auto",
    progress=None,
    read_paths: list | None = None,
) -> dict[str, Any]:
    """Predict every row of `inputs` (columns seq, source, [crop_*], metadata...) into Parquet."""
    t0 = time.perf_counter()
    pred = load_predictor(weights, card, device, threads, backend)
    classes = np.array(pred.card["classes"], dtype=object)
    top_k = min(top_k, len(classes))
    mid = models.model_id(weights)
    meta_cols = [c for c in inputs.columns if c not in ("seq", "source")]  # crop box included
    meta_schema = (
        pa.Schema.from_pandas(inputs[meta_cols], preserve_index=False) if meta_cols else pa.schema([])
    )
    meta_schema = pa.schema([f for f in meta_schema if f.name in meta_cols])
    seq = inputs["seq"].to_numpy()
    sources = inputs["source"].astype(str).to_numpy()
    per_class: collections.Counter[str] = collections.Counter()
    reasons: collections.Counter[str] = collections.Counter()
    n_pred = 0
    with atomic_path(predictions_path) as ptmp, atomic_path(rejected_path) as rtmp:
        pwriter: pq.ParquetWriter | None = None
        rwriter = pq.ParquetWriter(rtmp, REJECTED_SCHEMA, compression="zstd")
        pending: list[pa.RecordBatch] = []
        pending_rows = 0
        schema = None
        for batch, probs, feats in iter_batches(
            inputs, pred, batch_size, workers, max_pixels, progress, read_paths
        ):
            if batch["rejected"]:
                idx = np.array([r[0] for r in batch["rejected"]])
                rwriter.write_table(
                    pa.table(
                        {
                            "seq": pa.array(seq[idx], pa.int64()),
                            "source": pa.array(sources[idx], pa.string()),
                            "reason": [r[1] for r in batch["rejected"]],
                            "detail": [r[2] for r in batch["rejected"]],
                        },
                        schema=REJECTED_SCHEMA,
                    )
                )
                reasons.update(r[1] for r in batch["rejected"])
            idx = batch["index"]
            if not len(idx):
                continue
            if schema is None:
                schema = prediction_schema(top_k, meta_schema, feats.shape[1] if embeddings else None)
                pwriter = pq.ParquetWriter(ptmp, schema, compression="zstd")
            order = np.argsort(-probs, axis=1, kind="stable")[:, :top_k]
            cols: dict[str, Any] = {"seq": seq[idx], "id": batch["ids"], "source": sources[idx]}
            for c in meta_cols:
                cols[c] = inputs[c].to_numpy()[idx]
            for k in range(top_k):
                cols[f"top{k + 1}_label"] = classes[order[:, k]]
                cols[f"top{k + 1}_prob"] = np.take_along_axis(probs, order[:, k : k + 1], 1)[:, 0]
            cols["model_id"] = [mid] * len(idx)
            cols["run_id"] = [run_id] * len(idx)
            if embeddings:
                flat = pa.array(feats.astype(np.float32).ravel())
                cols["embedding"] = pa.FixedSizeListArray.from_arrays(flat, feats.shape[1])
                cols.update(zip(drift.STAT_COLUMNS, batch["stats"].T, strict=True))  # drift hook (issue 11)
            pending.append(
                pa.RecordBatch.from_pydict(
                    {
                        k: (
                            v
                            if isinstance(v, pa.Array)
                            else pa.array(v, schema.field(k).type, from_pandas=True)
                        )
                        for k, v in cols.items()
                    },
                    schema=schema,
                )
            )
            pending_rows += len(idx)
            per_class.update(classes[order[:, 0]])
            n_pred += len(idx)
            if pending_rows >= ROW_GROUP:
                pwriter.write_table(pa.Table.from_batches(pending), row_group_size=ROW_GROUP)
                pending, pending_rows = [], 0
        if schema is None:  # nothing predictable: still write a readable, empty table
            schema = prediction_schema(top_k, meta_schema, None)
            pwriter = pq.ParquetWriter(ptmp, schema, compression="zstd")
        if pending:
            pwriter.write_table(pa.Table.from_batches(pending), row_group_size=ROW_GROUP)
        pwriter.close()
        rwriter.close()
    seconds = time.perf_counter() - t0
    summary = {
        "seen": len(inputs),
        "predicted": int(n_pred),
        "rejected": int(sum(reasons.values())),
        "rejected_by_reason": dict(sorted(reasons.items())),
        "per_class": dict(sorted(per_class.items())),
        "seconds": round(seconds, 3),
        "model_id": mid,
    }
    if summary["predicted"] + summary["rejected"] != summary["seen"]:
        raise RuntimeError(f"counts do not reconcile: {summary}")
    write_json(summary, summary_path)
    log.info("shard done: %s", summary)
    return summary


def run_identity(
    model_id: str, inputs_path: str | Path | None, params: dict[str, Any], inputs_sha256: str | None = None
) -> str:
    """Deterministic id of an inference run: model, input table and prediction settings."""
    keys = ("top_k", "embeddings", "max_pixels", "backend")
    digest = inputs_sha256 or sha256_file(inputs_path)
    blob = f"{model_id}:{digest}:" + repr([(k, params.get(k)) for k in keys])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def loader_settings(params: dict[str, Any], threads: int) -> tuple[int, int]:
    """Batch size and decode workers; null settings get the defaults measured fastest.

    GPU: batches of 256 and threads - 1 decode workers feeding it. CPU: batches of 64 (cache
    friendly) and threads // 4 workers, since the forward pass already uses every thread
    (2-core box: 1311 img/s without a worker vs 1119 with one, 2026-11-26).
    """
    gpu = models.pick_device(params["device"]).type == "cuda"
    batch = params.get("batch_size") or (256 if gpu else 64)
    workers = params.get("workers")
    if workers is None:
        workers = max(0, threads - 1) if gpu else threads // 4
    return batch, workers


def run_shard_step(
    *,
    inputs_path: str | Path,
    weights: str | Path,
    card: str | Path,
    scatteritem: str,
    out: dict[str, str | Path],
    params: dict[str, Any],
    threads: int,
    log_stream=None,
) -> dict[str, Any]:
    """One Snakemake shard: its block of the input table through run_shard.

    `inputs_path` is the campaign's inputs.parquet, or the shard's staged bundle (.zip, see
    aquaflow.engine.staging) when jobs share no file system with the images.
    """
    from aquaflow.engine.staging import shard_part

    with shard_part(inputs_path, scatteritem, Path(out["predictions"]).parent) as (part, reads, digest):
        return _run_part(part, weights, card, out, params, threads, log_stream, reads, digest)


def _run_part(part, weights, card, out, params, threads, log_stream, reads, inputs_sha256) -> dict[str, Any]:
    batch_size, workers = loader_settings(params, threads)
    log.info("batch size %d, %d decode worker(s), %d thread(s)", batch_size, workers, threads)
    return run_shard(
        part,
        weights,
        card,
        out["predictions"],
        out["rejected"],
        out["summary"],
        top_k=params["top_k"],
        batch_size=batch_size,
        workers=workers,
        threads=threads,
        device=params["device"],
        embeddings=params["embeddings"],
        max_pixels=params["max_pixels"],
        backend=params["backend"],
        run_id=run_identity(models.model_id(weights), None, params, inputs_sha256),
        progress=log_stream,
        read_paths=reads,
    )
