"""Sharded bulk detection on the classification engine's rails.

Same inputs table, same decoding and rejection reasons (`aquaflow.engine.items.Items`, no down-scaling),
same shard slicing, prefetch thread, atomic outputs and reconciled counts: every input image ends
in exactly one of counts (predicted, possibly with zero detections) or rejected. Ultralytics runs on
real batches of decoded arrays (`Detector.predict` / `predict_tiled`).
"""

from __future__ import annotations

import collections
import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from torch.utils.data import DataLoader
from tqdm import tqdm

from aquaflow.backends.yolo import ultra
from aquaflow.backends.yolo.predict import Detector
from aquaflow.data import imaging
from aquaflow.data.inputs import source_paths
from aquaflow.engine import gather as shard_gather
from aquaflow.engine.items import CROP_COLUMNS, REJECTED_SCHEMA, Items, crop_of, prefetched
from aquaflow.engine.staging import source_reader
from aquaflow.io import atomic_path, read_json, sha256_file, write_json, write_tsv
from aquaflow.monitoring import drift
from aquaflow.tasks.detect import outputs

log = logging.getLogger(__name__)


class _Frames(Items):
    """Decoded full-resolution RGB arrays (no letterbox, no JPEG draft) with their image statistics
    (`aquaflow.monitoring.drift.image_stats`, for drift monitoring), or rejection records."""

    def __getitem__(self, i: int):
        src, box = self.sources[i], self.crops[i]
        try:
            if isinstance(src, imaging.Rejected):  # found while staging (aquaflow.engine.staging)
                raise src
            img, digest = self._crop(src, box) if box else self._whole(src)
            return i, img, digest[:16], "", "", drift.image_stats(img, img.shape[1], img.shape[0])
        except imaging.Rejected as rej:
            return i, None, "", rej.reason, rej.detail, None
        except Exception as exc:  # a shard never crashes on one bad file
            return i, None, "", imaging.DECODE_ERROR, f"{type(exc).__name__}: {exc}", None


def _collate(batch: list) -> dict[str, Any]:
    ok = [b for b in batch if b[1] is not None]
    return {
        "index": np.array([b[0] for b in ok], dtype=np.int64),
        "ids": [b[2] for b in ok],
        "images": [b[1] for b in ok],
        "rejected": [(b[0], b[3], b[4]) for b in batch if b[1] is None],
        "stats": [b[5] for b in ok],
    }


def _counts_schema(meta: pa.Schema, classes: list[str]) -> pa.Schema:
    f = pa.field
    fields = [f("seq", pa.int64()), f("id", pa.string()), f("source", pa.string()), *meta]
    fields += [f("image_width", pa.int32()), f("image_height", pa.int32()), f("n", pa.int32())]
    fields += [f(f"n_{c}", pa.int32()) for c in classes]
    return pa.schema(fields + [f(c, pa.float32()) for c in drift.STAT_COLUMNS])


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
    t0 = time.perf_counter()
    task, classes = card["task"], list(card["classes"])
    det = Detector(ultra.load(weights, task), task, settings, ultra.device_arg(device))
    mid = sha256_file(weights)
    tiled = settings["tiling"]["enabled"]
    meta_cols = [c for c in inputs.columns if c not in ("seq", "source")]
    meta = pa.Schema.from_pandas(inputs[meta_cols], preserve_index=False) if meta_cols else pa.schema([])
    meta = pa.schema([f for f in meta if f.name in meta_cols])
    px = settings.get("pixel_size")
    dschema = outputs.detection_schema(task, meta, outputs.area_column(px))
    cschema = _counts_schema(meta, classes)
    seq, sources = inputs["seq"].to_numpy(), inputs["source"].astype(str).to_numpy()
    crops = [None] * len(inputs)
    if "crop_x" in inputs.columns:
        crops = [crop_of(r) for r in inputs[list(CROP_COLUMNS)].to_dict("records")]
    reads = read_paths if read_paths is not None else source_paths(inputs)  # bytes: non-UTF-8 names
    ds = _Frames(reads, crops, None, settings["max_pixels"])
    loader = DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=0, collate_fn=_collate)
    reasons: collections.Counter[str] = collections.Counter()
    per_class: collections.Counter[str] = collections.Counter()
    n_img = n_det = 0
    with (
        atomic_path(out["predictions"]) as ptmp,
        atomic_path(out["counts"]) as ctmp,
        atomic_path(out["rejected"]) as rtmp,
    ):
        pw = pq.ParquetWriter(ptmp, dschema, compression="zstd")
        cw = pq.ParquetWriter(ctmp, cschema, compression="zstd")
        rw = pq.ParquetWriter(rtmp, REJECTED_SCHEMA, compression="zstd")
        for batch in tqdm(prefetched(loader), total=len(loader), file=progress, mininterval=10.0):
            if batch["rejected"]:
                idx = np.array([r[0] for r in batch["rejected"]])
                rej = {"seq": seq[idx], "source": sources[idx]}
                rej |= {
                    "reason": [r[1] for r in batch["rejected"]],
                    "detail": [r[2] for r in batch["rejected"]],
                }
                rw.write_table(pa.table(rej, schema=REJECTED_SCHEMA))
                reasons.update(r[1] for r in batch["rejected"])
            if not len(batch["index"]):
                continue
            images = batch["images"]
            found = (
                det.predict_tiled(images, settings["tiling"], batch_size) if tiled else det.predict(images)
            )
            dcols: dict[str, list] = collections.defaultdict(list)
            ccols: dict[str, list] = collections.defaultdict(list)
            for i, image_id, d, stats in zip(
                batch["index"], batch["ids"], found, batch["stats"], strict=True
            ):
                rows = outputs.detection_rows(d, task, classes, px)
                k = len(d)
                base = {"seq": [seq[i]] * k, "id": [image_id] * k, "source": [sources[i]] * k}
                base |= {c: [inputs[c].iat[i]] * k for c in meta_cols}
                for key, vals in {**base, **rows, "model_id": [mid] * k, "run_id": [run_id] * k}.items():
                    dcols[key] += vals
                ccols["seq"].append(seq[i])
                ccols["id"].append(image_id)
                ccols["source"].append(sources[i])
                for c in meta_cols:
                    ccols[c].append(inputs[c].iat[i])
                ccols["image_width"].append(d.width)
                ccols["image_height"].append(d.height)
                ccols["n"].append(k)
                hist = np.bincount(d.cls, minlength=len(classes))
                for j, c in enumerate(classes):
                    ccols[f"n_{c}"].append(int(hist[j]))
                for c, v in zip(drift.STAT_COLUMNS, stats, strict=True):
                    ccols[c].append(float(v))
                per_class.update(classes[c] for c in d.cls)
                n_det += k
            n_img += len(batch["index"])
            if dcols:
                pw.write_table(pa.table({f.name: dcols[f.name] for f in dschema}, schema=dschema))
            cw.write_table(pa.table({f.name: ccols[f.name] for f in cschema}, schema=cschema))
        pw.close()
        cw.close()
        rw.close()
    summary = {
        "seen": len(inputs),
        "predicted": n_img,
        "rejected": int(sum(reasons.values())),
        "rejected_by_reason": dict(sorted(reasons.items())),
        "detections": n_det,
        "per_class": dict(sorted(per_class.items())),
        "tiled": bool(tiled),
        "seconds": round(time.perf_counter() - t0, 3),
        "model_id": mid,
    }
    if summary["predicted"] + summary["rejected"] != summary["seen"]:
        raise RuntimeError(f"counts do not reconcile: {summary}")
    write_json(summary, out["summary"])
    log.info("detection shard done: %s", summary)
    return summary


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
