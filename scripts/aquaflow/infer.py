"""The shard engine: decode in DataLoader workers, batched forward, Parquet row groups, nothing lost.

Every input row ends in exactly one of the predictions or the rejected table. Outputs are written
to temporary files and renamed at the end, so a killed job leaves no partial shard behind.
"""

from __future__ import annotations

import collections
import hashlib
import logging
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from . import drift, imaging
from . import model as models
from .inputs import source_paths
from .io import atomic_path, read_json, sha256_file, write_json

log = logging.getLogger(__name__)

CROP_COLUMNS = ("crop_x", "crop_y", "crop_w", "crop_h")
ROW_GROUP = 8192


def _crop_of(row: dict[str, Any]) -> tuple[int, int, int, int] | None:
    """The crop box of a row, or None for a whole-image row (no crop columns, or NaN: a row of a
    folder input concatenated with a FlowCam one). A crop row's box is returned as it is, even
    when missing (-1) or empty: _Items rejects it as bad_crop_box rather than predict the collage."""
    if "crop_x" not in row or any(row[c] is None or pd.isna(row[c]) for c in CROP_COLUMNS):
        return None
    return tuple(int(row[c]) for c in CROP_COLUMNS)  # type: ignore[return-value]


class _Items(Dataset):
    """Rows of an inputs table -> decoded, letterboxed uint8 arrays or rejection records.

    `sources` are paths as str, or bytes for file names that are not valid UTF-8 (see
    aquaflow.inputs.source_paths).
    """

    def __init__(
        self,
        sources: list[str | bytes],
        crops: list[tuple | None],
        size: int,
        max_pixels: int,
        resize: str = "letterbox",
    ):
        self.sources, self.crops = sources, crops
        self.size, self.max_pixels = size, max_pixels
        # the model card's `resize`: letterbox (ours) or stretch (e.g. planktonclas Keras models)
        self.resize = imaging.stretch if resize == "stretch" else imaging.letterbox
        self.draft = size if resize == "letterbox" else None  # exact pixels for stretch models
        self._collage: tuple[str | bytes, np.ndarray | imaging.Rejected] | None = None

    def __len__(self) -> int:
        return len(self.sources)

    def _whole(self, src: str | bytes) -> tuple[np.ndarray, str]:
        data = imaging.read_bytes(src)
        dec = imaging.decode(data, self.max_pixels, draft=self.draft)
        self._size = (dec.width, dec.height)  # drift hook (issue 11): size before draft scaling
        return dec.image, hashlib.sha256(data).hexdigest()

    def _crop(self, src: str | bytes, box: tuple[int, int, int, int]) -> tuple[np.ndarray, str]:
        x, y, w, h = box
        if x < 0 or y < 0 or w <= 0 or h <= 0:
            raise imaging.Rejected(imaging.BAD_CROP_BOX, f"crop box {box} is missing or empty")
        if self._collage is None or self._collage[0] != src:  # rows of a collage are contiguous
            try:
                img: np.ndarray | imaging.Rejected = imaging.load(src, self.max_pixels).image
            except imaging.Rejected as rej:
                img = rej
            self._collage = (src, img)
        img = self._collage[1]
        if isinstance(img, imaging.Rejected):
            raise img
        H, W = img.shape[:2]
        if x + w > W or y + h > H:
            raise imaging.Rejected(imaging.BAD_CROP_BOX, f"crop {box} outside collage of size {W}x{H}")
        crop = np.ascontiguousarray(img[y : y + h, x : x + w])
        digest = hashlib.sha256(f"{h}x{w}:".encode() + crop.tobytes()).hexdigest()
        return crop, digest

    def __getitem__(self, i: int) -> tuple[int, np.ndarray | None, str, str, str]:
        src, box = self.sources[i], self.crops[i]
        try:
            self._size = None
            if isinstance(src, imaging.Rejected):  # found while staging (aquaflow.staging)
                raise src
            img, digest = self._crop(src, box) if box else self._whole(src)
            # drift hook (issue 11): statistics of the decoded image, before letterboxing
            stats = drift.image_stats(img, *(self._size or (img.shape[1], img.shape[0])))
            return i, self.resize(img, self.size), digest[:16], "", "", stats
        except imaging.Rejected as rej:
            return i, None, "", rej.reason, rej.detail, None
        except Exception as exc:  # a shard never crashes on one bad file
            return i, None, "", imaging.DECODE_ERROR, f"{type(exc).__name__}: {exc}", None


def _collate(batch: list) -> dict[str, Any]:
    ok = [b for b in batch if b[1] is not None]
    images = np.stack([b[1] for b in ok]) if ok else np.zeros((0, 1, 1, 3), np.uint8)
    return {
        "index": np.array([b[0] for b in ok], dtype=np.int64),
        "ids": [b[2] for b in ok],
        "images": torch.from_numpy(images).permute(0, 3, 1, 2),
        "rejected": [(b[0], b[3], b[4]) for b in batch if b[1] is None],
        # drift hook (issue 11): one row of image statistics per decoded item
        "stats": np.stack([b[5] for b in ok]) if ok else np.zeros((0, len(drift.STATS)), np.float32),
    }


BACKENDS = ("auto", "eager", "compile", "onnx")


@dataclass
class Predictor:
    """A loaded model ready for uint8 NCHW batches: returns (probs, features) as numpy.

    Backends (`inference.backend`): eager PyTorch (AMP bf16 on GPU), torch.compile, or ONNX
    Runtime on the CPU (the model is exported in memory at load time, no extra file). `auto`
    picks the fastest measured path: ONNX Runtime on a CPU, eager on a GPU.
    """

    net: torch.nn.Module
    card: dict[str, Any]
    device: torch.device
    amp: bool
    backend: str = "eager"
    session: Any = None  # onnxruntime.InferenceSession for backend "onnx"

    @classmethod
    def load(
        cls,
        weights: str | Path,
        card: str | Path | dict,
        device: str = "auto",
        threads: int = 1,
        backend: str = "auto",
    ) -> Predictor:
        if backend not in BACKENDS:
            raise ValueError(f"unknown inference backend {backend!r}; allowed: {BACKENDS}")
        card = card if isinstance(card, dict) else read_json(card)
        if card.get("backend") == "keras" or card.get("format") == "keras":
            from .keras_backend import KerasPredictor  # TensorFlow only when a Keras model is used

            return KerasPredictor.load(weights, card, device, threads)  # type: ignore[return-value]
        torch.set_num_threads(max(1, threads))
        base, card = models.load(weights, card)
        dev = models.pick_device(device)
        net = models.Normalized(base, card["normalization"]["mean"], card["normalization"]["std"])
        net = net.to(dev).eval().to(memory_format=torch.channels_last)
        session = None
        if backend == "auto":
            backend = "onnx" if dev.type == "cpu" else "eager"
        if backend == "onnx":
            if dev.type != "cpu":
                raise ValueError("backend 'onnx' runs on the CPU; use eager or compile on a GPU")
            session = _onnx_session(net, card["input_size"], threads)
        elif backend == "compile":
            net = torch.compile(net, dynamic=True)
        return cls(net, card, dev, dev.type == "cuda", backend, session)

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        if self.session is not None:
            logits, feats = self.session.run(None, {"images": images.numpy()})
            logits = logits - logits.max(axis=1, keepdims=True)
            e = np.exp(logits)
            return (e / e.sum(axis=1, keepdims=True)).astype(np.float32), feats
        x = images.to(self.device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            logits, feats = self.net(x)
        probs = torch.softmax(logits.float(), dim=1)
        return probs.cpu().numpy(), feats.float().cpu().numpy()


def _onnx_session(net: torch.nn.Module, size: int, threads: int):
    """Export the wrapped model (uint8 in, logits + features out) to ONNX in memory and load it."""
    import io
    import warnings

    import onnxruntime as ort

    buf = io.BytesIO()
    example = torch.zeros((2, 3, size, size), dtype=torch.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript-based exporter
        torch.onnx.export(
            net,
            (example,),
            buf,
            dynamo=False,
            opset_version=17,
            input_names=["images"],
            output_names=["logits", "features"],
            dynamic_axes={"images": {0: "n"}},
        )
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(1, threads)
    opts.inter_op_num_threads = 1
    # no busy-waiting between batches: those cycles belong to the decoding thread/workers
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(buf.getvalue(), opts, providers=["CPUExecutionProvider"])


def _prefetched(iterable, depth: int = 2):
    """Iterate in a background thread, `depth` items ahead: without worker processes, the next
    batch is decoded while the current one is in the (GIL-releasing) forward pass."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()

    def produce() -> None:
        try:
            for item in iterable:
                q.put(item)
        except BaseException as exc:  # re-raised in the consumer
            q.put(exc)
        q.put(done)

    threading.Thread(target=produce, daemon=True).start()
    while (item := q.get()) is not done:
        if isinstance(item, BaseException):
            raise item
        yield item


def iter_batches(
    inputs: pd.DataFrame,
    predictor: Predictor,
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
        crops = [_crop_of(r) for r in inputs[list(CROP_COLUMNS)].to_dict("records")]
    card = predictor.card
    reads = read_paths if read_paths is not None else source_paths(inputs)
    ds = _Items(reads, crops, card["input_size"], max_pixels, card.get("resize", "letterbox"))
    loader = DataLoader(
        ds,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=_collate,
        pin_memory=predictor.device.type == "cuda",
        prefetch_factor=4 if workers else None,
        persistent_workers=False,
    )
    batches = loader if workers else _prefetched(loader)
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


REJECTED_SCHEMA = pa.schema(
    [
        pa.field("seq", pa.int64()),
        pa.field("source", pa.string()),
        pa.field("reason", pa.string()),
        pa.field("detail", pa.string()),
    ]
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
) -> dict[str, Any]:
    """Predict every row of `inputs` (columns seq, source, [crop_*], metadata...) into Parquet."""
    t0 = time.perf_counter()
    pred = Predictor.load(weights, card, device, threads, backend)
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


def shard_slice(n_rows: int, scatteritem: str) -> slice:
    """Contiguous rows of shard 'i-of-n' (Snakemake scatteritem), balanced to +-1 row."""
    i, n = (int(v) for v in scatteritem.split("-of-"))
    if not 1 <= i <= n:
        raise ValueError(f"bad scatter item {scatteritem!r}")
    return slice(n_rows * (i - 1) // n, n_rows * i // n)


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
    aquaflow.staging) when jobs share no file system with the images.
    """
    from .staging import shard_part

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
