"""Sound shards (task `sound`) on the engine (`aquaflow.engine.shards`).

An input row is a recording; it ends in exactly one of predicted (all its windows in the
per-window table) or rejected (with the reason of `aquaflow.data.audio`), so counts reconcile per
file as for images. Windows are streamed in batches that may span recordings (never a whole
recording in memory); a batch carries `windows` (what the model sees), `index` (the recordings
finished in it) and `rejected`. `SoundSink` holds a recording's rows until it is finished, so a
recording that fails mid-stream leaves no rows. Gather adds per-file and per-hour tables.
"""

from __future__ import annotations

import collections
import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from aquaflow.data import audio
from aquaflow.data.imaging import Rejected, display_path
from aquaflow.data.inputs import read_targets
from aquaflow.engine import gather as shard_gather
from aquaflow.engine import shards
from aquaflow.io import read_json, sha256_file, write_parquet, write_tsv
from aquaflow.monitoring import drift
from aquaflow.tasks.sound import plots, tables
from aquaflow.tasks.sound.metrics import bin_km

log = logging.getLogger(__name__)
# settings a campaign may set; the sample rate and window length are the model's (its card)
CAMPAIGN_AUDIO = ("hop_s", "channel", "tail", "block_s", "name_pattern")
SHARD_FILES = {"predictions": "parquet", "rejected": "parquet", "summary": "json"}  # a shard's outputs


def window_spec(card: dict[str, Any], audio_cfg: dict[str, Any]) -> audio.WindowSpec:
    """The model's sample rate and window length, the use case's hop, channel, tail, blocks."""
    chosen = {k: audio_cfg[k] for k in CAMPAIGN_AUDIO if k in audio_cfg}
    return audio.WindowSpec.from_config({**card["audio"], **chosen})


def window_batches(
    inputs: pd.DataFrame,
    spec: audio.WindowSpec,
    batch_size: int,
    read_paths: list | None = None,
    progress=None,
) -> Iterator[dict[str, Any]]:
    """Batches of at most `batch_size` windows over the recordings of `inputs`, in order."""
    reads = read_paths if read_paths is not None else read_targets(inputs)
    empty = np.zeros((0, spec.length), np.float32)
    buf: list[np.ndarray] = []
    meta: list[tuple] = []
    done: list[int] = []
    rejected: list[tuple[int, str, str]] = []

    def flush() -> dict[str, Any]:
        nonlocal buf, meta, done, rejected
        out = {
            "windows": np.stack(buf) if buf else empty,
            "meta": meta,
            "index": np.array(done, dtype=np.int64),
            "rejected": rejected,
        }
        buf, meta, done, rejected = [], [], [], []
        return out

    for i, src in enumerate(tqdm(reads, file=progress, mininterval=10.0, desc="recordings")):
        if isinstance(src, Rejected):
            rejected.append((i, src.reason, src.detail))
            continue
        try:
            for w in audio.windows(src, spec):
                buf.append(w.samples)
                meta.append((i, w.index, w.start_s, w.end_s, w.padded_s))
                if len(buf) == batch_size:
                    yield flush()
            done.append(i)
        except Rejected as err:
            rejected.append((i, err.reason, err.detail))
        except OSError as err:
            rejected.append((i, "unreadable", str(err)))
    yield flush()


class SoundSink:
    """The per-window table of a shard (see the module doc; columns in config/README.md)."""

    def __init__(
        self,
        inputs: pd.DataFrame,
        out: dict[str, str | Path],
        card: dict[str, Any],
        mid: str,
        embeddings: bool,
    ):
        self.outputs = {"predictions": out["predictions"]}
        self.classes, self.mid, self.embeddings = list(card["classes"]), mid, embeddings
        self.edges = list(card["audio"]["distance_edges_km"])
        self.seq = inputs["seq"].to_numpy()
        self.sources = [display_path(s) for s in inputs["source"].astype(str)]
        self.pattern = card["audio"].get("name_pattern", audio.NAME_PATTERN)
        self.pending: dict[int, list[dict[str, Any]]] = collections.defaultdict(list)
        self.writer: pq.ParquetWriter | None = None
        self.windows = 0

    def open(self, tmp: dict[str, Path]) -> None:
        self.tmp = tmp["predictions"]

    def _rows(self, batch: dict[str, Any], found: dict[str, np.ndarray]) -> None:
        km = bin_km(found["expected_bin"], self.edges)
        for j, (i, k, start, end, padded) in enumerate(batch["meta"]):
            station, t0 = audio.recording_start(self.sources[i], self.pattern)
            when = audio.absolute_start(t0, start)
            row = {
                "seq": int(self.seq[i]),
                "source": self.sources[i],
                "file": Path(self.sources[i]).name,
                "station": station,
                "window": int(k),
                "start_s": float(start),
                "end_s": float(end),
                "padded_s": float(padded),
                "start_utc": pd.Timestamp(when) if when else pd.NaT,
                "label": self.classes[int(found["probs"][j].argmax())],
                "confidence": float(found["probs"][j].max()),
                **{f"p_{c}": float(found["probs"][j][n]) for n, c in enumerate(self.classes)},
                "distance_bin": int(found["bin"][j]),
                "expected_bin": float(found["expected_bin"][j]),
                "expected_km": float(km[j]),
                "model_id": self.mid,
            }
            if self.embeddings:
                row["embedding"] = found["embedding"][j].astype(np.float32).tolist()
            self.pending[i].append(row)

    def _write(self, rows: list[dict[str, Any]]) -> None:
        table = pa.Table.from_pandas(pd.DataFrame(rows), preserve_index=False)
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.tmp, table.schema, compression="zstd")
        self.writer.write_table(table.cast(self.writer.schema))

    def write(self, batch: dict[str, Any], found: dict[str, np.ndarray]) -> collections.Counter[str]:
        self._rows(batch, found)
        for i, _, _ in batch["rejected"]:
            self.pending.pop(i, None)  # a recording that failed mid-stream leaves no rows
        counts: collections.Counter[str] = collections.Counter()
        for i in batch["index"]:
            rows = self.pending.pop(int(i), [])
            if rows:
                self._write(rows)
            self.windows += len(rows)
            counts.update(r["label"] for r in rows)
        return counts

    def close(self) -> dict[str, Any]:
        self.pending.clear()  # rows of recordings rejected in the last (window-less) batch
        if self.writer is None:
            self._write_empty()
        else:
            self.writer.close()
        return {"windows": self.windows}

    def _write_empty(self) -> None:
        cols = {
            "seq": pa.int64(),
            "source": pa.string(),
            "file": pa.string(),
            "window": pa.int64(),
            "label": pa.string(),
        }
        pq.write_table(pa.schema(cols).empty_table(), self.tmp)


def run_shard(
    inputs: pd.DataFrame,
    weights: str | Path,
    card: dict[str, Any],
    out: dict[str, str | Path],
    settings: dict[str, Any],
    *,
    read_paths: list | None = None,
    progress=None,
) -> dict[str, Any]:
    """Every recording of `inputs` -> out[predictions] (one row per window) or out[rejected]."""
    import torch

    from aquaflow.backends.sound.model import SoundModel  # here: the gather step needs no torch

    torch.set_num_threads(int(settings.get("threads", 1)))
    model = SoundModel(weights, card, settings.get("device", "cpu"))
    spec = window_spec(card, settings.get("audio", {}))
    mid = sha256_file(weights)
    sink = SoundSink(inputs, out, card, mid, bool(settings.get("embeddings", False)))
    decoded = window_batches(inputs, spec, int(settings.get("batch", 32)), read_paths, progress)

    def predict(batch: dict[str, Any]) -> dict[str, np.ndarray]:
        return model.predict(batch["windows"])

    return shards.run(inputs, decoded, predict, sink, out["rejected"], out["summary"], mid)


def run_shard_step(
    *,
    inputs_path: str | Path,
    weights: str | Path,
    card_path: str | Path,
    scatteritem: str,
    out: dict,
    settings: dict,
    log_stream=None,
) -> dict[str, Any]:
    """One Snakemake shard of a campaign: its block of the inputs table (or its staged bundle)."""
    from aquaflow.engine.staging import shard_part

    card = read_json(card_path)
    with shard_part(inputs_path, scatteritem, Path(out["predictions"]).parent) as (part, reads, _digest):
        return run_shard(part, weights, card, out, settings, read_paths=reads, progress=log_stream)


def gather(
    *,
    predictions: list,
    rejected: list,
    summaries: list,
    out: dict[str, str | Path],
    absent: str,
    classes: list[str] | None = None,
    spectrograms: int = 0,
    inputs: str | Path | None = None,
) -> dict[str, Any]:
    """Merged per-window and rejected tables, the dataset folder, the summary (json + tsv), and the
    per-file and per-hour tables (counts per class, occupancy, mean expected distance) and, with
    out[spectrograms], the spectrograms of the `spectrograms` most confident vessel windows."""
    from aquaflow.data.inputs import read_skipped

    summary = shard_gather.merge_summaries(
        summaries, out["summary"], read_skipped(inputs) if inputs else None
    )
    shard_gather.check_rows(rejected, summary["shards"], "rejected")
    n_rows = shard_gather.merge_tables(predictions, out["predictions"])
    n_win = sum(s["windows"] for s in summary["shards"].values())
    if n_rows != n_win:
        raise RuntimeError(f"{n_rows} window rows, the shard summaries count {n_win}")
    shard_gather.merge_tables(rejected, out["rejected"])
    shard_gather.link_dataset(predictions, out["dataset"])
    rows = [*shard_gather.summary_rows(summary), ("total", "windows", n_win)]
    write_tsv(pd.DataFrame(rows, columns=["scope", "quantity", "count"]), out["table"])
    if "spectrograms" in out:
        confident = pd.read_parquet(out["predictions"], columns=plots.COLUMNS)
        plots.confident_spectrograms(confident, out["spectrograms"], spectrograms, absent)
    write_tables(out["predictions"], out, absent, classes)
    return summary


def write_tables(
    predictions: str | Path, out: dict[str, str | Path], absent: str, classes: list[str] | None
) -> None:
    """out[per_file|per_hour] (Parquet) and out[per_file_tsv|per_hour_tsv] of a per-window table."""
    table = pd.read_parquet(predictions, columns=tables.COLUMNS)
    for name, df in (
        ("per_file", tables.per_file(table, absent, classes)),
        ("per_hour", tables.per_hour(table, absent, classes)),
    ):
        write_parquet(df, out[name])
        write_tsv(df, out[f"{name}_tsv"])


def predict_recordings(
    inputs: pd.DataFrame,
    weights: str | Path,
    card: dict[str, Any],
    folder: str | Path,
    settings: dict[str, Any],
    absent: str,
    progress=None,
) -> dict[str, Any]:
    """`aquaflow predict` of a sound model: one shard over every recording of `inputs` into
    `folder` (predictions, rejected, summary as a campaign shard's) plus the per-file and per-hour
    tables of the campaign's gather."""
    if absent not in card["classes"]:
        raise ValueError(f"absent class {absent!r} is not among the model's classes {card['classes']}")
    folder = Path(folder)
    out: dict[str, str | Path] = {k: folder / f"{k}.{ext}" for k, ext in SHARD_FILES.items()}
    summary = run_shard(inputs, weights, card, out, settings, progress=progress)
    tables_out = {f"per_{k}": folder / f"per_{k}.parquet" for k in ("file", "hour")}
    tables_out |= {f"per_{k}_tsv": folder / f"per_{k}.tsv" for k in ("file", "hour")}
    if summary["windows"]:
        write_tables(out["predictions"], tables_out, absent, list(card["classes"]))
    return summary


def reference_files(truth: pd.DataFrame, card: dict[str, Any], splits: list[str]) -> list[str]:
    """The labelled recordings of the drift reference: those of `splits` as the card's training
    lists them (`training.files`), or every recording of `truth` for a card without them."""
    listed = (card.get("training") or {}).get("files")
    if not listed:
        return sorted(set(truth["file"]))
    return sorted({f for s in splits for f in listed.get(s, [])})


def build_reference(
    folder: str | Path,
    truth: pd.DataFrame,
    weights: str | Path,
    card: dict[str, Any],
    cfg: dict[str, Any],
    work: str | Path,
    progress=None,
) -> dict[str, np.ndarray]:
    """The drift reference of a sound model: windows of its training recordings through the same
    shard as a campaign (embeddings on) -> a class-stratified sample of `drift.reference.sample_size`
    windows, PCA-reduced embeddings and predicted classes (no image statistics).

    cfg: the drift section's reference, pca_components and seed, plus `audio` (the campaign-side
    window settings), `device` and `threads` of the shards."""
    files = reference_files(truth, card, cfg["reference"]["splits"])
    if not files:
        raise ValueError(
            f"drift.reference.splits {cfg['reference']['splits']}: the model card lists no recordings"
        )
    inputs = pd.DataFrame({"seq": np.arange(len(files)), "source": [str(Path(folder) / f) for f in files]})
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    out: dict[str, str | Path] = {k: work / f"reference_{k}.{e}" for k, e in SHARD_FILES.items()}
    settings = {k: cfg[k] for k in ("audio", "device", "threads") if k in cfg} | {"embeddings": True}
    run_shard(inputs, weights, card, out, settings, progress=progress)
    windows = pd.read_parquet(out["predictions"], columns=["file", "label", "embedding"])
    if windows.empty:
        raise ValueError(f"no window of the reference recordings {files[:5]} could be read")
    seed = int(cfg["seed"])
    windows = drift.sample_rows(windows, cfg["reference"]["sample_size"], seed, by="label")
    train = (
        truth[truth["file"].isin(reference_files(truth, card, ["train"]))]["label"]
        .value_counts()
        .sort_index()
    )
    return {
        **drift.embedding_reference(np.stack(windows["embedding"].to_numpy()), cfg["pca_components"], seed),
        "predicted": np.asarray(windows["label"], dtype=str),
        "classes": np.array(card["classes"], dtype=str),
        "train_labels": train.index.to_numpy().astype(str),
        "train_counts": train.to_numpy().astype(np.int64),
        "model_id": np.array(card["id"]),
    }


def reference_step(
    *,
    data: str | Path,
    weights: str | Path,
    card_path: str | Path,
    out: dict[str, str | Path],
    cfg: dict[str, Any],
    mlflow_cfg: dict[str, Any] | None = None,
    log_stream=None,
) -> dict[str, Any]:
    """The drift_reference_sound step: build from the labelled recordings (`cfg` data, truth),
    store beside the model, attach to the training MLflow run when the card names one."""
    from aquaflow.monitoring import tracking

    card = read_json(card_path)
    folder = Path(data) / cfg["data"]
    truth = pd.read_csv(folder / cfg["truth"])
    with tempfile.TemporaryDirectory() as work:
        ref = build_reference(folder, truth, weights, card, cfg, work, progress=log_stream)
    meta = drift.save_reference(ref, out["reference"], out["summary"])
    if mlflow_cfg is not None:
        tracking.attach_to_training_run(
            card, [out["reference"], out["summary"]], "drift_reference", mlflow_cfg
        )
    return meta
