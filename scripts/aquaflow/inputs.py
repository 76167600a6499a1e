"""The inference input table: every item to predict, one row each, in a stable order (`seq`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd

from .dataset import list_images


def from_folder(root: str | Path, extensions: list[str]) -> pd.DataFrame:
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"inference input folder does not exist: {root}")
    rel = list_images(root, tuple(extensions))
    return pd.DataFrame({"source": [os.path.join(root, p) for p in rel]})


def from_manifest(path: str | Path, column: str) -> pd.DataFrame:
    """Paths listed in a Parquet/CSV/TSV file; relative paths are relative to that file's folder."""
    path = Path(path)
    if path.suffix == ".parquet":
        df = pd.read_parquet(path)
    else:
        df = pd.read_csv(path, sep="\t" if path.suffix in (".tsv", ".txt") else ",", dtype=str)
    if column not in df.columns:
        raise ValueError(f"{path}: no column {column!r} (columns: {list(df.columns)})")
    src = [p if os.path.isabs(p) else os.path.join(path.parent, p) for p in df[column].astype(str)]
    out = df.drop(columns=[column])
    out.insert(0, "source", src)
    return out


def build(
    specs: list[dict[str, Any]], dataset_images: str | Path, dataset_root: str | Path | None = None
) -> pd.DataFrame:
    """Concatenate every configured input; add `seq` (0..n-1), the id of a row in this run.

    `dataset_images`: the images of the use case's dataset (kind `dataset`); `dataset_root`: the
    folder the preprocess steps wrote (kind `preprocessed` reads its items.parquet).
    """
    from . import flowcam

    frames = []
    for spec in specs:
        kind = spec["kind"]
        if kind == "dataset":
            df = from_folder(dataset_images, spec["extensions"])
        elif kind == "folder":
            df = from_folder(spec["path"], spec["extensions"])
        elif kind == "manifest":
            df = from_manifest(spec["path"], spec["column"])
        elif kind == "preprocessed":
            if dataset_root is None:
                raise ValueError("input kind 'preprocessed' needs preprocess steps in the use case")
            df = from_manifest(Path(dataset_root) / "items.parquet", spec["column"])
        elif kind == "flowcam":
            df = flowcam.list_run(spec["path"])
        else:  # the schema prevents this
            raise ValueError(f"unknown input kind {kind!r}")
        frames.append(df)
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame({"source": []})
    table.insert(0, "seq", range(len(table)))
    table["seq"] = table["seq"].astype("int64")
    return table
