"""What a classification shard writes: one row per image with its top-k labels and probabilities
(and, with embeddings on, the embedding and the image statistics drift monitoring reads)."""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from aquaflow.data.inputs import metadata_columns
from aquaflow.monitoring.drift import STAT_COLUMNS

ROW_GROUP = 8192


def prediction_schema(top_k: int, meta: pa.Schema, embed_dim: int | None) -> pa.Schema:
    fields = [pa.field("seq", pa.int64()), pa.field("id", pa.string()), pa.field("source", pa.string())]
    fields += [f for f in meta]
    for k in range(1, top_k + 1):
        fields += [pa.field(f"top{k}_label", pa.string()), pa.field(f"top{k}_prob", pa.float32())]
    fields += [pa.field("model_id", pa.string()), pa.field("run_id", pa.string())]
    if embed_dim:
        fields.append(pa.field("embedding", pa.list_(pa.float32(), embed_dim)))
        fields += [pa.field(c, pa.float32()) for c in STAT_COLUMNS]
    return pa.schema(fields)


class ClassifySink:
    """The predictions table of a shard, in Parquet row groups (see `aquaflow.engine.shards.Sink`);
    `found` per batch is (probabilities, features) of the decoded items."""

    def __init__(
        self,
        inputs: pd.DataFrame,
        predictions: str | Path,
        classes: list[str],
        top_k: int,
        embeddings: bool,
        model_id: str,
        run_id: str,
    ):
        self.outputs = {"predictions": predictions}
        self.inputs, self.classes = inputs, np.array(classes, dtype=object)
        self.top_k, self.embeddings = min(top_k, len(classes)), embeddings
        self.model_id, self.run_id = model_id, run_id
        self.meta_cols, self.meta = metadata_columns(inputs)
        self.seq, self.sources = inputs["seq"].to_numpy(), inputs["source"].astype(str).to_numpy()
        self.schema: pa.Schema | None = None
        self.writer: pq.ParquetWriter | None = None
        self.pending: list[pa.RecordBatch] = []
        self.pending_rows = 0

    def open(self, tmp: dict[str, Path]) -> None:
        self.path = tmp["predictions"]

    def write(self, batch: dict[str, Any], found: tuple[np.ndarray, np.ndarray]) -> collections.Counter[str]:
        probs, feats = found
        idx = batch["index"]
        if self.schema is None:
            dim = feats.shape[1] if self.embeddings else None
            self.schema = prediction_schema(self.top_k, self.meta, dim)
            self.writer = pq.ParquetWriter(self.path, self.schema, compression="zstd")
        order = np.argsort(-probs, axis=1, kind="stable")[:, : self.top_k]
        cols: dict[str, Any] = {"seq": self.seq[idx], "id": batch["ids"], "source": self.sources[idx]}
        for c in self.meta_cols:
            cols[c] = self.inputs[c].to_numpy()[idx]
        for k in range(self.top_k):
            cols[f"top{k + 1}_label"] = self.classes[order[:, k]]
            cols[f"top{k + 1}_prob"] = np.take_along_axis(probs, order[:, k : k + 1], 1)[:, 0]
        cols["model_id"] = [self.model_id] * len(idx)
        cols["run_id"] = [self.run_id] * len(idx)
        if self.embeddings:
            flat = pa.array(feats.astype(np.float32).ravel())
            cols["embedding"] = pa.FixedSizeListArray.from_arrays(flat, feats.shape[1])
            cols.update(zip(STAT_COLUMNS, batch["stats"].T, strict=True))
        arrays = {
            k: v if isinstance(v, pa.Array) else pa.array(v, self.schema.field(k).type, from_pandas=True)
            for k, v in cols.items()
        }
        self.pending.append(pa.RecordBatch.from_pydict(arrays, schema=self.schema))
        self.pending_rows += len(idx)
        if self.pending_rows >= ROW_GROUP:
            self._flush()
        return collections.Counter(self.classes[order[:, 0]])

    def _flush(self) -> None:
        if self.pending:
            self.writer.write_table(pa.Table.from_batches(self.pending), row_group_size=ROW_GROUP)
        self.pending, self.pending_rows = [], 0

    def close(self) -> dict[str, Any]:
        if self.schema is None:  # nothing predictable: still a readable, empty table
            self.schema = prediction_schema(self.top_k, self.meta, None)
            self.writer = pq.ParquetWriter(self.path, self.schema, compression="zstd")
        self._flush()
        self.writer.close()
        return {}
