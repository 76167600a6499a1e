"""One shard of any task: decode every input row, predict batches, write the task's tables.

The engine part of every task's bulk inference, written once: decoding with rejection reasons
(`Items`), a background prefetch thread (or DataLoader workers), the rejected ledger, outputs
written to temporary files and renamed only when the whole shard succeeded (a killed job or a full
disk leaves nothing that looks complete), and counts that must reconcile (seen = predicted +
rejected). A task plug-in is a `Sink`: which tables it writes and how one batch of predictions
becomes rows of them.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from aquaflow.data.inputs import read_targets
from aquaflow.engine.items import CROP_COLUMNS, REJECTED_SCHEMA, Items, collate, crop_of, prefetched
from aquaflow.io import atomic_path, write_json

log = logging.getLogger(__name__)


class Sink(Protocol):
    """What a task writes for a shard (its tables) from each batch of predictions."""

    outputs: dict[str, str | Path]  # table name -> final path (written atomically by the engine)

    def open(self, tmp: dict[str, Path]) -> None:
        """Start writing each table to its temporary path."""

    def write(self, batch: dict[str, Any], found: Any) -> collections.Counter[str]:
        """Rows for the decoded items of `batch`; returns the count per class it predicted."""

    def close(self) -> dict[str, Any]:
        """Finish the tables; returns the task's own summary fields."""


def batches(
    inputs: pd.DataFrame,
    *,
    size: int | None,
    resize: str,
    max_pixels: int,
    batch_size: int,
    workers: int = 0,
    pin_memory: bool = False,
    progress=None,
    read_paths: list | None = None,
) -> Iterator[dict[str, Any]]:
    """Decoded batches of the rows of `inputs` (see `items.collate`); rejected rows ride along.

    `size` None keeps every image at full resolution (a list of arrays per batch); `read_paths`:
    where to read each row's file when it is not `source` (a staged copy)."""
    crops = [None] * len(inputs)
    if "crop_x" in inputs.columns:
        crops = [crop_of(r) for r in inputs[list(CROP_COLUMNS)].to_dict("records")]
    from torch.utils.data import DataLoader  # here: importing torch costs the gather steps ~3 s

    reads = read_paths if read_paths is not None else read_targets(inputs)
    loader = DataLoader(
        Items(reads, crops, size, max_pixels, resize),
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=functools.partial(collate, stack=size is not None),
        pin_memory=pin_memory,
        prefetch_factor=4 if workers else None,
        persistent_workers=False,
    )
    stream = loader if workers else prefetched(loader)
    yield from tqdm(stream, total=len(loader), file=progress, mininterval=10.0, desc="batches")


def run(
    inputs: pd.DataFrame,
    decoded: Iterator[dict[str, Any]],
    predict: Callable[[dict[str, Any]], Any],
    sink: Sink,
    rejected_path: str | Path,
    summary_path: str | Path,
    model_id: str,
) -> dict[str, Any]:
    """Every row of `inputs` through `predict` into the sink's tables or the rejected ledger;
    the summary (counts per reason and class, the sink's fields) is written last."""
    t0 = time.perf_counter()
    seq, sources = inputs["seq"].to_numpy(), inputs["source"].astype(str).to_numpy()
    reasons: collections.Counter[str] = collections.Counter()
    per_class: collections.Counter[str] = collections.Counter()
    n_pred = 0
    with contextlib.ExitStack() as stack:
        rtmp = stack.enter_context(atomic_path(rejected_path))
        sink.open({k: stack.enter_context(atomic_path(p)) for k, p in sink.outputs.items()})
        rwriter = pq.ParquetWriter(rtmp, REJECTED_SCHEMA, compression="zstd")
        for batch in decoded:
            if rejected := batch["rejected"]:
                idx = np.array([r[0] for r in rejected])
                rej = {"seq": pa.array(seq[idx], pa.int64()), "source": pa.array(sources[idx], pa.string())}
                rej |= {"reason": [r[1] for r in rejected], "detail": [r[2] for r in rejected]}
                rwriter.write_table(pa.table(rej, schema=REJECTED_SCHEMA))
                reasons.update(r[1] for r in rejected)
            # a batch may carry `windows` of inputs that span batches (sound): predicted when any
            if len(batch["index"]) or len(batch.get("windows", ())):
                per_class.update(sink.write(batch, predict(batch)))
                n_pred += len(batch["index"])
        extra = sink.close()
        rwriter.close()
    summary = {
        "seen": len(inputs),
        "predicted": int(n_pred),
        "rejected": int(sum(reasons.values())),
        "rejected_by_reason": dict(sorted(reasons.items())),
        "per_class": dict(sorted(per_class.items())),
        **extra,
        "seconds": round(time.perf_counter() - t0, 3),
        "model_id": model_id,
    }
    if summary["predicted"] + summary["rejected"] != summary["seen"]:
        raise RuntimeError(f"counts do not reconcile: {summary}")
    write_json(summary, summary_path)
    log.info("shard done: %s", summary)
    return summary
