"""What a detection-type shard writes (detect, segment, obb): one row per detection (box, score,
class, mask or rotated box, area) and one row per image with its counts per class and its image
statistics (drift monitoring)."""

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
from aquaflow.tasks.detect import outputs
from aquaflow.tasks.detect.detections import Detections


def counts_schema(meta: pa.Schema, classes: list[str]) -> pa.Schema:
    f = pa.field
    fields = [f("seq", pa.int64()), f("id", pa.string()), f("source", pa.string()), *meta]
    fields += [f("image_width", pa.int32()), f("image_height", pa.int32()), f("n", pa.int32())]
    fields += [f(f"n_{c}", pa.int32()) for c in classes]
    return pa.schema(fields + [f(c, pa.float32()) for c in STAT_COLUMNS])  # for drift monitoring


class DetectSink:
    """The detections and per-image counts tables of a shard (`aquaflow.engine.shards.Sink`);
    `found` per batch is one `Detections` per decoded image."""

    def __init__(
        self,
        inputs: pd.DataFrame,
        out: dict[str, str | Path],
        task: str,
        classes: list[str],
        pixel_size: dict[str, Any] | None,
        model_id: str,
        run_id: str,
        tiled: bool,
    ):
        self.outputs = {"predictions": out["predictions"], "counts": out["counts"]}
        self.inputs, self.task, self.classes, self.px = inputs, task, list(classes), pixel_size
        self.model_id, self.run_id, self.tiled = model_id, run_id, tiled
        self.meta_cols, meta = metadata_columns(inputs)
        self.seq, self.sources = inputs["seq"].to_numpy(), inputs["source"].astype(str).to_numpy()
        self.dschema = outputs.detection_schema(task, meta, outputs.area_column(pixel_size))
        self.cschema = counts_schema(meta, self.classes)
        self.n_det = 0

    def open(self, tmp: dict[str, Path]) -> None:
        self.dw = pq.ParquetWriter(tmp["predictions"], self.dschema, compression="zstd")
        self.cw = pq.ParquetWriter(tmp["counts"], self.cschema, compression="zstd")

    def _image(self, i: int) -> dict[str, Any]:
        row = {"seq": self.seq[i], "source": self.sources[i]}
        return row | {c: self.inputs[c].iat[i] for c in self.meta_cols}

    def write(self, batch: dict[str, Any], found: list[Detections]) -> collections.Counter[str]:
        dcols: dict[str, list] = collections.defaultdict(list)
        ccols: dict[str, list] = collections.defaultdict(list)
        per_class: collections.Counter[str] = collections.Counter()
        for i, image_id, d, stats in zip(batch["index"], batch["ids"], found, batch["stats"], strict=True):
            k, image = len(d), self._image(i) | {"id": image_id}
            rows = outputs.detection_rows(d, self.task, self.classes, self.px)
            for key, vals in {**{c: [v] * k for c, v in image.items()}, **rows}.items():
                dcols[key] += vals
            dcols["model_id"] += [self.model_id] * k
            dcols["run_id"] += [self.run_id] * k
            hist = np.bincount(d.cls, minlength=len(self.classes))
            counts = {"image_width": d.width, "image_height": d.height, "n": k}
            counts |= {f"n_{c}": int(hist[j]) for j, c in enumerate(self.classes)}
            counts |= {c: float(v) for c, v in zip(STAT_COLUMNS, stats, strict=True)}
            for key, val in (image | counts).items():
                ccols[key].append(val)
            per_class.update(self.classes[c] for c in d.cls)
            self.n_det += k
        if dcols:
            self.dw.write_table(pa.table({f.name: dcols[f.name] for f in self.dschema}, schema=self.dschema))
        self.cw.write_table(pa.table({f.name: ccols[f.name] for f in self.cschema}, schema=self.cschema))
        return per_class

    def close(self) -> dict[str, Any]:
        self.dw.close()
        self.cw.close()
        return {"detections": self.n_det, "tiled": self.tiled}
