"""Classification shards on the engine (`aquaflow.engine.shards`): any classifier backend's
predictor on decoded batches, its top-k into `aquaflow.tasks.classify.shard.ClassifySink`.

Every input row ends in exactly one of the predictions or the rejected table; outputs are written
to temporary files and renamed at the end, so a killed job leaves no partial shard behind.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from aquaflow.backends import load_predictor
from aquaflow.backends import torch_model as models
from aquaflow.data import imaging, loader
from aquaflow.engine import shards
from aquaflow.io import sha256_file
from aquaflow.tasks.classify.shard import ClassifySink

log = logging.getLogger(__name__)


def iter_batches(
    inputs: pd.DataFrame,
    predictor: Any,
    batch_size: int,
    workers: int,
    max_pixels: int = imaging.DEFAULT_MAX_PIXELS,
    progress=None,
    read_paths: list | None = None,
) -> Iterator[tuple[dict[str, Any], np.ndarray, np.ndarray]]:
    """Yield (batch, probs, features) per batch of a classifier; rejected rows ride along in batch.

    `read_paths`: where to read each row's file when it is not `source` (a staged copy)."""
    for batch in _decoded(inputs, predictor, batch_size, workers, max_pixels, progress, read_paths):
        if len(batch["index"]):
            probs, feats = predictor(batch["images"])
        else:
            probs = np.zeros((0, len(predictor.card["classes"])), np.float32)
            feats = np.zeros((0, 0), np.float32)
        yield batch, probs, feats


def _decoded(inputs, predictor, batch_size, workers, max_pixels, progress, read_paths):
    card = predictor.card
    return shards.batches(
        inputs,
        size=card["input_size"],
        resize=card.get("resize", "letterbox"),
        max_pixels=max_pixels,
        batch_size=batch_size,
        workers=workers,
        pin_memory=predictor.device.type == "cuda",
        progress=progress,
        read_paths=read_paths,
    )


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
    safe_mode: bool = True,
) -> dict[str, Any]:
    """Predict every row of `inputs` (columns seq, source, [crop_*], metadata...) into Parquet.

    `safe_mode`: the use case's `model.safe_mode` (or the command's flag), never the card's."""
    pred = load_predictor(weights, card, device, threads, backend, safe_mode)
    mid = models.model_id(weights)
    sink = ClassifySink(inputs, predictions_path, pred.card["classes"], top_k, embeddings, mid, run_id)
    decoded = _decoded(inputs, pred, batch_size, workers, max_pixels, progress, read_paths)
    return shards.run(inputs, decoded, lambda b: pred(b["images"]), sink, rejected_path, summary_path, mid)


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
    return batch, loader.decode_workers(threads, gpu, params.get("workers"))


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
    safe_mode: bool = True,
) -> dict[str, Any]:
    """One Snakemake shard: its block of the input table through run_shard.

    `inputs_path` is the campaign's inputs.parquet, or the shard's staged bundle (.zip, see
    aquaflow.engine.staging) when jobs share no file system with the images.
    """
    from aquaflow.engine.staging import shard_part

    with shard_part(inputs_path, scatteritem, Path(out["predictions"]).parent) as (part, reads, digest):
        return _run_part(part, weights, card, out, params, threads, log_stream, reads, digest, safe_mode)


def _run_part(
    part, weights, card, out, params, threads, log_stream, reads, inputs_sha256, safe_mode
) -> dict[str, Any]:
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
        safe_mode=safe_mode,
    )
