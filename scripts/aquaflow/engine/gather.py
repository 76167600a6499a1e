"""Gathering shard outputs: one merged table per kind, a Parquet dataset folder and a summary."""

from __future__ import annotations

import collections
import os
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from aquaflow.io import atomic_path, read_json, write_json


def _concat_sorted(paths: list[str | Path]) -> pa.Table:
    tables = [pq.read_table(p) for p in paths]
    tables = [t for t in tables if t.num_rows] or tables[:1]
    table = pa.concat_tables(tables, promote_options="permissive")
    return table.take(pc.sort_indices(table, [("seq", "ascending")]))


def merge_tables(paths: list[str | Path], out: str | Path) -> int:
    """Concatenate shard tables ordered by `seq` (input order) into one Parquet file."""
    table = _concat_sorted(paths)
    with atomic_path(out) as tmp:
        pq.write_table(table, tmp, compression="zstd", row_group_size=65536)
    return table.num_rows


def link_dataset(paths: list[str | Path], out_dir: str | Path) -> None:
    """A folder holding exactly these shard files (hard links), readable as one Parquet dataset."""
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(f".{out_dir.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for p in paths:
        p = Path(p)
        try:
            os.link(p, tmp / p.name)
        except OSError:
            shutil.copy2(p, tmp / p.name)
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(tmp, out_dir)


def merge_summaries(
    paths: list[str | Path], out: str | Path, skipped: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Per-shard summaries and their totals; raises if seen != predicted + rejected anywhere.
    `skipped` (inputs.read_skipped: files the listings passed over) is reported beside them, so
    that predicted + rejected + skipped = files in the input folders."""
    shards, reasons, classes = {}, collections.Counter(), collections.Counter()
    total = {"seen": 0, "predicted": 0, "rejected": 0}
    for p in paths:
        s = read_json(p)
        shards[Path(p).stem] = s
        for k in total:
            total[k] += s[k]
        reasons.update(s["rejected_by_reason"])
        classes.update(s["per_class"])
    if total["seen"] != total["predicted"] + total["rejected"]:
        raise RuntimeError(f"counts do not reconcile: {total}")
    summary = {
        **total,
        "model_id": ",".join(sorted({s.get("model_id", "") for s in shards.values()} - {""})),
        "rejected_by_reason": dict(sorted(reasons.items())),
        "per_class": dict(sorted(classes.items())),
        "skipped": sum((skipped or {}).get("counts", {}).values()),
        "skipped_by_reason": dict(sorted((skipped or {}).get("counts", {}).items())),
        "skipped_files": (skipped or {}).get("files", []),
        "shards": shards,
    }
    write_json(summary, out)
    return summary


def check_rows(paths: list[str | Path], summaries: dict[str, dict[str, Any]], kind: str) -> None:
    """Each shard's table has as many rows as its summary counts `kind` (predicted | rejected);
    `paths` and `summaries` are in the same shard order. Raises naming every shard that disagrees."""
    if len(paths) != len(summaries):
        raise RuntimeError(f"{len(paths)} {kind} tables for {len(summaries)} shard summaries")
    bad = [
        f"shard {name}: {Path(p).name} has {n} rows, its summary {s[kind]} {kind}"
        for p, (name, s) in zip(paths, summaries.items(), strict=True)
        if (n := pq.read_metadata(p).num_rows) != s[kind]
    ]
    if bad:
        raise RuntimeError("shard tables disagree with their summaries: " + "; ".join(bad))


def summary_rows(summary: dict[str, Any]) -> list[tuple[str, str, int]]:
    """(scope, quantity, count) rows for the report: totals, rejections, classes, shards."""
    rows = [("total", k, summary[k]) for k in ("seen", "predicted", "rejected", "skipped") if k in summary]
    rows += [("rejected", reason, n) for reason, n in summary["rejected_by_reason"].items()]
    rows += [("skipped", reason, n) for reason, n in summary.get("skipped_by_reason", {}).items()]
    rows += [("predicted class", c, n) for c, n in summary["per_class"].items()]
    for name, s in summary["shards"].items():
        rows += [(f"shard {name}", k, s[k]) for k in ("seen", "predicted", "rejected")]
    return rows


def run(
    *,
    predictions: list,
    rejected: list,
    summaries: list,
    out: dict[str, str | Path],
    inputs: str | Path | None = None,
) -> None:
    """The gather step: merged predictions/rejected, the shard dataset folder, summary json+tsv
    (with what the listing of `inputs`, the campaign's input table, skipped)."""
    import pandas as pd

    from aquaflow.data.inputs import read_skipped
    from aquaflow.io import write_tsv

    summary = merge_summaries(summaries, out["summary"], read_skipped(inputs) if inputs else None)
    check_rows(predictions, summary["shards"], "predicted")
    check_rows(rejected, summary["shards"], "rejected")
    merge_tables(predictions, out["predictions"])
    merge_tables(rejected, out["rejected"])
    link_dataset(predictions, out["dataset"])
    write_tsv(pd.DataFrame(summary_rows(summary), columns=["scope", "quantity", "count"]), out["table"])
