"""Detection-type shards (detect, segment, obb) on the engine (`aquaflow.engine.shards`).

Same inputs table, decoding and rejection reasons (at full resolution), shard slicing, prefetch,
atomic outputs and reconciled counts as every task: each input image ends in exactly one of counts
(predicted, possibly with zero detections) or rejected. Ultralytics runs on real batches of decoded
arrays (`Detector.predict` / `predict_tiled`); `aquaflow.tasks.detect.shard.DetectSink` writes.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import pandas as pd

from aquaflow.backends.yolo import ultra
from aquaflow.backends.yolo.predict import Detector
from aquaflow.data import imaging
from aquaflow.engine import gather as shard_gather
from aquaflow.engine import shards
from aquaflow.engine.staging import source_reader
from aquaflow.io import read_json, sha256_file, write_tsv
from aquaflow.tasks.detect import outputs
from aquaflow.tasks.detect.shard import DetectSink

log = logging.getLogger(__name__)


def run_shard(
    inputs: pd.DataFrame,
    weights: str | Path,
    card: dict[str, Any],
    out: dict[str, str | Path],
    settings: dict[str, Any],
    *,
    batch_size: int,
    device: str,
    run_id: str = "",
    progress=None,
    read_paths: list | None = None,
) -> dict[str, Any]:
    """Detect objects in every row of `inputs` into out[predictions|counts|rejected|summary].
    `read_paths`: what to read per row instead of its source (a staged bundle's files)."""
    task, classes = card["task"], list(card["classes"])
    det = Detector(ultra.load(weights, task), task, settings, ultra.device_arg(device))
    mid = sha256_file(weights)
    tiling = settings["tiling"]
    sink = DetectSink(inputs, out, task, classes, settings.get("pixel_size"), mid, run_id, tiling["enabled"])
    decoded = shards.batches(
        inputs,
        size=None,  # full resolution: Ultralytics resizes, tiles are cut from the original
        resize="letterbox",
        max_pixels=settings["max_pixels"],
        batch_size=batch_size,
        progress=progress,
        read_paths=read_paths,
    )

    def predict(batch: dict[str, Any]) -> list:
        if tiling["enabled"]:
            return det.predict_tiled(batch["images"], tiling, batch_size)
        return det.predict(batch["images"])

    return shards.run(inputs, decoded, predict, sink, out["rejected"], out["summary"], mid)


def run_shard_step(
    *,
    inputs_path: str | Path,
    weights: str | Path,
    card_path: str | Path,
    scatteritem: str,
    out: dict[str, str | Path],
    settings: dict[str, Any],
    ultralytics_dir: str | Path,
    log_stream=None,
) -> dict[str, Any]:
    """One Snakemake shard of a campaign: its block of the inputs table, or its staged bundle
    (.zip, aquaflow.engine.staging) when jobs share no file system with the images."""
    from aquaflow.engine.staging import shard_part

    ultra.setup(ultralytics_dir)
    card = read_json(card_path)
    log.info("shard %s: tiled %s", scatteritem, settings["tiling"]["enabled"])
    with shard_part(inputs_path, scatteritem, Path(out["predictions"]).parent) as (part, reads, digest):
        return run_shard(
            part,
            weights,
            card,
            out,
            settings,
            batch_size=int(settings["batch"]),
            device=settings["device"],
            run_id=run_identity(sha256_file(weights), digest, settings),
            progress=log_stream,
            read_paths=reads,
        )


def run_identity(model_id: str, inputs_sha256: str, settings: dict[str, Any]) -> str:
    """Deterministic id of a detection run: model, input table and every prediction setting."""
    blob = f"{model_id}:{inputs_sha256}:{json.dumps(settings, sort_keys=True, default=str)}"
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def gather(
    *,
    predictions: list,
    counts: list,
    rejected: list,
    summaries: list,
    card_path: str | Path,
    out: dict[str, str | Path],
    overlays: int,
    inputs: str | Path | None = None,
    staged: list[str | Path] | None = None,
) -> dict[str, Any]:
    """Merged tables, dataset folder, summary (json + tsv), COCO results + images, overlays (their
    images read from the `staged` bundles when jobs share no file system with them)."""
    from aquaflow.data.inputs import read_skipped

    card = read_json(card_path)
    task, classes = card["task"], list(card["classes"])
    summary = shard_gather.merge_summaries(
        summaries, out["summary"], read_skipped(inputs) if inputs else None
    )
    total_det = sum(read_json(p)["detections"] for p in summaries)
    n_rows = shard_gather.merge_tables(predictions, out["predictions"])
    n_img = shard_gather.merge_tables(counts, out["counts"])
    n_rej = shard_gather.merge_tables(rejected, out["rejected"])
    if (n_img, n_rej, n_rows) != (summary["predicted"], summary["rejected"], total_det):
        raise RuntimeError(f"tables ({n_img}, {n_rej}, {n_rows}) disagree with the summaries {summary}")
    shard_gather.link_dataset(predictions, out["dataset"])
    rows = [*shard_gather.summary_rows(summary), ("total", "detections", total_det)]
    write_tsv(pd.DataFrame(rows, columns=["scope", "quantity", "count"]), out["table"])
    table = pd.read_parquet(out["predictions"])
    cnt = pd.read_parquet(out["counts"])
    outputs.write_json_compact(outputs.coco_results(table, task), out["coco"])
    outputs.write_json_compact(outputs.coco_images(cnt, classes), out["coco_images"])
    write_overlays(table, cnt, task, out["overlays"], overlays, source_reader(cnt, staged))
    return summary


def write_overlays(
    table: pd.DataFrame, counts: pd.DataFrame, task: str, folder: str | Path, n: int, read=imaging.read_bytes
) -> None:
    """Overlay PNGs for the first `n` predicted images (those with detections first);
    `read(source) -> bytes` (aquaflow.engine.staging.source_reader)."""
    import shutil

    import cv2

    folder = Path(folder)
    tmp = folder.with_name(f".{folder.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    pick = counts.sort_values(["n", "seq"], ascending=[False, True]).head(n)
    for r in pick.itertuples(index=False):
        img = imaging.decode(read(r.source)).image
        drawn = outputs.overlay(img, table[table["seq"] == r.seq], task)
        cv2.imwrite(
            str(tmp / f"{int(r.seq):06d}_{Path(r.source).stem}.png"), cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR)
        )
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
