"""The inference input table: every item to predict, one row each, in a stable order (`seq`).

File names that are not valid UTF-8 (a Latin-1 name written by an old instrument PC) cannot be
stored as Parquet text. Such a row keeps a readable `source` (undecodable bytes as backslash
escapes) plus `source_hex`, the hex of the exact bytes of the path, so the file is still found and
predicted: `source_paths(table)` gives back what to open. `source_hex` is "" for every other row,
and the column is only present when at least one row needs it.

Every path a listing or a list file gives is checked against its root (the input folder, the
manifest's folder, the FlowCam run folder, the dataset): a row whose file resolves outside it
(absolute path, `..`, a link) is kept with `outside_root` True and never read; the shard engine and
staging reject it as `outside_root` (`read_targets`). The column is only present when a row needs it;
`allow_paths_outside_root` in the use case turns the check off.

What a folder listing passed over (hidden files, other extensions, FIFOs...) is kept with the table
(`table.attrs["skipped"]`) and written into the Parquet file's metadata by `write`, so that
predicted + rejected + skipped = files in the folder can be checked later (`read_skipped`).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from aquaflow.data import roots
from aquaflow.data.dataset import scan_folder
from aquaflow.data.imaging import Rejected, display_path
from aquaflow.io import atomic_path

SOURCE_HEX = "source_hex"
OUTSIDE = roots.OUTSIDE_ROOT  # bool column: the row's file resolves outside its input's root
SKIPPED_KEY = b"aquaflow.skipped"
SKIPPED_LISTED = 1000  # skipped files named in the metadata (all are counted)


def from_folder(root: str | Path, extensions: list[str]) -> pd.DataFrame:
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"inference input folder does not exist: {root}")
    listing = scan_folder(root, tuple(extensions))
    df = pd.DataFrame({"source": [os.path.join(root, p) for p in listing.paths]})
    df.attrs["skipped"] = [(os.path.join(root, p), why) for p, why in listing.skipped]
    return df


def from_manifest(path: str | Path, column: str) -> pd.DataFrame:
    """Paths listed in a Parquet/CSV/TSV file; relative paths are relative to that file's folder.

    A CSV/TSV that is not UTF-8 (a Latin-1 list from an instrument PC) is read byte-exactly
    (undecodable bytes surrogate-escaped), so its paths still name the files on disk. An empty
    cell stays empty and is rejected as bad_file_name.
    """
    path = Path(path)
    if path.suffix == ".parquet":
        df = pd.read_parquet(path)
    else:
        df = pd.read_csv(
            path,
            sep="\t" if path.suffix in (".tsv", ".txt") else ",",
            dtype=str,
            encoding="utf-8",
            encoding_errors="surrogateescape",
        )
    if column not in df.columns:
        raise ValueError(f"{path}: no column {column!r} (columns: {list(df.columns)})")
    src = [
        "" if p is None or p == "" or (isinstance(p, float) and p != p) else str(p)
        for p in df[column].tolist()
    ]
    src = [p if not p or os.path.isabs(p) else os.path.join(path.parent, p) for p in src]
    out = df.drop(columns=[column])
    out.insert(0, "source", src)
    return out


def carry_file_names(table: pd.DataFrame) -> pd.DataFrame:
    """Make `source` valid UTF-8 text; add `source_hex` where that changed the path (see module doc)."""
    shown = [display_path(s) for s in table["source"]]
    changed = [a != b for a, b in zip(shown, table["source"], strict=True)]
    if any(changed):
        hexes = [os.fsencode(s).hex() if c else "" for s, c in zip(table["source"], changed, strict=True)]
        table = table.assign(source=shown)
        table.insert(table.columns.get_loc("source") + 1, SOURCE_HEX, hexes)
    return table


def source_paths(table: pd.DataFrame) -> list[str | bytes]:
    """What to open for each row: the exact bytes where `source_hex` is set, else `source`."""
    sources = table["source"].astype(str).tolist()
    if SOURCE_HEX not in table.columns:
        return sources  # type: ignore[return-value]
    return [
        bytes.fromhex(h) if isinstance(h, str) and h else s
        for s, h in zip(sources, table[SOURCE_HEX], strict=True)
    ]


def read_targets(table: pd.DataFrame) -> list[str | bytes | Rejected]:
    """What the engine reads per row: `source_paths`, or Rejected(outside_root) for a row whose
    file resolves outside its input's root (never opened, never staged)."""
    paths: list = source_paths(table)
    if OUTSIDE not in table.columns:
        return paths
    detail = (
        f"the path resolves outside its input's folder (manifest, run or dataset); set "
        f"`{roots.OPT_OUT}: true` in the use case only if the data really live elsewhere"
    )
    return [
        Rejected(roots.OUTSIDE_ROOT, detail) if bool(out) else p
        for p, out in zip(paths, table[OUTSIDE], strict=True)
    ]


def _mark_outside(df: pd.DataFrame, root: str | Path) -> pd.DataFrame:
    """Add the `outside_root` column to one input's rows (see the module doc)."""
    df[OUTSIDE] = roots.outside(df["source"].tolist(), root)
    return df


def relocate(table: pd.DataFrame, local_root: str, logical_root: str) -> pd.DataFrame:
    """Name files under `local_root` (where this job has the dataset, e.g. a local copy of a
    storage folder) by their place under `logical_root` (where the workflow keeps it), so that
    inputs.parquet, and the predictions, read the same with or without a shared file system."""
    if not logical_root or os.path.normpath(local_root) == os.path.normpath(logical_root):
        return table
    old = os.fsencode(os.path.normpath(local_root)) + b"/"
    new = os.fsencode(os.path.normpath(logical_root)) + b"/"

    def move(p: str | bytes) -> str:  # surrogate-escaped where not UTF-8
        raw = os.fsencode(p)
        return os.fsdecode(new + raw[len(old) :] if raw.startswith(old) else raw)

    out = table.drop(columns=[SOURCE_HEX]) if SOURCE_HEX in table.columns else table.copy()
    out["source"] = [move(p) for p in source_paths(table)]
    out = carry_file_names(out)
    out.attrs = table.attrs
    return out


def build(
    specs: list[dict[str, Any]],
    dataset_images: str | Path,
    dataset_root: str | Path | None = None,
    allow_outside_root: bool = False,
) -> pd.DataFrame:
    """Concatenate every configured input; add `seq` (0..n-1), the id of a row in this run.

    `dataset_images`: the images of the use case's dataset (kind `dataset`); `dataset_root`: the
    folder the preprocess steps wrote (kind `preprocessed` reads its items.parquet).
    `allow_outside_root`: the use case's `allow_paths_outside_root` (rows are not checked).
    """
    from aquaflow.data import flowcam

    frames, skipped = [], []
    for spec in specs:
        kind = spec["kind"]
        if kind == "dataset":
            df, root = from_folder(dataset_images, spec["extensions"]), dataset_images
        elif kind == "folder":
            df, root = from_folder(spec["path"], spec["extensions"]), spec["path"]
        elif kind == "file":  # one file named on the command line (`aquaflow predict`)
            df, root = pd.DataFrame({"source": [str(spec["path"])]}), Path(spec["path"]).parent
        elif kind == "manifest":
            df, root = from_manifest(spec["path"], spec["column"]), Path(spec["path"]).parent
        elif kind == "preprocessed":
            if dataset_root is None:
                raise ValueError("input kind 'preprocessed' needs preprocess steps in the use case")
            df, root = from_manifest(Path(dataset_root) / "items.parquet", spec["column"]), dataset_root
        elif kind == "flowcam":
            df, root = flowcam.list_run(spec["path"]), spec["path"]
        else:  # the schema prevents this
            raise ValueError(f"unknown input kind {kind!r}")
        skipped += df.attrs.get("skipped", [])
        frames.append(df if allow_outside_root else _mark_outside(df, root))
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame({"source": []})
    if OUTSIDE in table.columns and not table[OUTSIDE].astype(bool).any():
        table = table.drop(columns=[OUTSIDE])  # present only when a row needs it
    elif OUTSIDE in table.columns:
        table[OUTSIDE] = table[OUTSIDE].astype(bool)
    table = carry_file_names(table)
    table.insert(0, "seq", range(len(table)))
    table["seq"] = table["seq"].astype("int64")
    table.attrs = {"skipped": [(display_path(p), why) for p, why in skipped]}
    return table


def write(table: pd.DataFrame, path: str | Path) -> None:
    """Write the input table atomically, with what the listings skipped in the file's metadata."""
    skipped = table.attrs.get("skipped", [])
    meta = {
        "counts": dict(sorted(Counter(why for _, why in skipped).items())),
        "files": [{"path": p, "reason": why} for p, why in skipped[:SKIPPED_LISTED]],
    }
    frame = pd.DataFrame(table)
    frame.attrs = {}
    arrow = pa.Table.from_pandas(frame, preserve_index=False)
    arrow = arrow.replace_schema_metadata({**(arrow.schema.metadata or {}), SKIPPED_KEY: json.dumps(meta)})
    with atomic_path(path) as tmp:
        pq.write_table(arrow, tmp, compression="zstd")


def read_skipped(path: str | Path) -> dict[str, Any]:
    """{counts: {reason: n}, files: [{path, reason}, ...]} as written by `write` (empty if none)."""
    meta = pq.read_schema(path).metadata or {}
    if SKIPPED_KEY not in meta:
        return {"counts": {}, "files": []}
    return json.loads(meta[SKIPPED_KEY])


def metadata_columns(inputs: pd.DataFrame) -> tuple[list[str], pa.Schema]:
    """An inputs table's own columns (crop box and metadata; not seq/source) and their schema,
    carried into every task's prediction tables."""
    cols = [c for c in inputs.columns if c not in ("seq", "source", OUTSIDE)]
    schema = pa.Schema.from_pandas(inputs[cols], preserve_index=False) if cols else pa.schema([])
    return cols, pa.schema([f for f in schema if f.name in cols])
