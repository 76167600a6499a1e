"""FlowCam run folders: particle crops located in collage TIFFs by the .lst file or the CSV export.

A run folder holds collage images (`<run>_000001.tif`, ...) and either the list file `<run>.lst`
(format 017: version line, `num-fields|N`, N `name|type` lines, then `|`-separated rows) or the
VisualSpreadsheet list-data CSV (`Image File`, `Image X`, `Image Y`, `Image Width`, `Image Height`,
`Particle ID`, ...). Each particle becomes one input row: the collage path, the crop box and every
per-particle field as a metadata column. A row whose crop box is missing or empty is kept (crop
values -1 or 0) and rejected by the shard engine as bad_crop_box, never predicted on the whole collage.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd

RESERVED = {"seq", "source", "crop_x", "crop_y", "crop_w", "crop_h", "id", "model_id", "run_id", "embedding"}
RESERVED |= {"outside_root"}  # the listing's own flag (aquaflow.data.inputs)
_LST_TYPES = {"int32": "Int64", "int64": "Int64", "double": "float64", "float": "float64"}


def normalise(name: str) -> str:
    """'Diameter (ESD)' -> 'diameter_esd'."""
    return re.sub(r"[^0-9a-z]+", "_", name.strip().lower()).strip("_")


def read_lst(path: str | Path) -> pd.DataFrame:
    """Parse a FlowCam .lst file (format >= 017), reading the field list from the header."""
    lines = Path(path).read_text(encoding="latin-1").splitlines()
    if len(lines) < 2 or not lines[1].startswith("num-fields|"):
        raise ValueError(f"{path}: not a FlowCam list file (no 'num-fields|N' on line 2)")
    n = int(lines[1].split("|", 1)[1])
    fields = [ln.split("|", 1) for ln in lines[2 : 2 + n]]
    names = [f[0].strip() for f in fields]
    rows = [ln.split("|") for ln in lines[2 + n :] if ln.strip()]
    bad = [i for i, r in enumerate(rows) if len(r) != n]
    if bad:
        raise ValueError(f"{path}: row {bad[0] + 1} has the wrong number of fields (want {n})")
    df = pd.DataFrame(rows, columns=names)
    for name, typ in ((f[0].strip(), f[1].strip() if len(f) > 1 else "string") for f in fields):
        if typ in _LST_TYPES:
            df[name] = pd.to_numeric(df[name], errors="coerce").astype(_LST_TYPES[typ])
    return df.rename(
        columns={
            "collage_file": "collage",
            "image_w": "crop_w",
            "image_h": "crop_h",
            "image_x": "crop_x",
            "image_y": "crop_y",
        }
    )


def read_csv_export(path: str | Path) -> pd.DataFrame:
    """Parse a VisualSpreadsheet list-data CSV export into the same columns as read_lst."""
    df = pd.read_csv(path, encoding="latin-1")
    df.columns = [normalise(c) for c in df.columns]
    return df.rename(
        columns={
            "image_file": "collage",
            "collage_file": "collage",
            "image_x": "crop_x",
            "image_y": "crop_y",
            "image_width": "crop_w",
            "image_height": "crop_h",
        }
    )


def _collage_path(folder: Path, name: object) -> str:
    """The collage file a row names. List files are read as Latin-1, so each character is one
    byte of the name as the instrument PC wrote it: those bytes are the file name on disk
    (surrogate-escaped where they are not UTF-8). An empty name gives "" (bad_file_name)."""
    if name is None or pd.isna(name) or not str(name).strip():
        return ""
    return os.path.join(folder, os.fsdecode(str(name).strip().encode("latin-1")))


def list_run(folder: str | Path) -> pd.DataFrame:
    """One row per particle: source (collage path), crop_x/y/w/h and per-particle metadata."""
    folder = Path(folder)
    lst = sorted(folder.glob("*.lst"))
    csvs = sorted(p for p in folder.glob("*.csv") if not p.stem.endswith("_summary"))
    if lst:
        df = pd.concat([read_lst(p) for p in lst], ignore_index=True)
    elif csvs:
        df = pd.concat([read_csv_export(p) for p in csvs], ignore_index=True)
    else:
        raise FileNotFoundError(f"{folder}: no FlowCam .lst or list-data .csv file")
    missing = {"collage", "crop_x", "crop_y", "crop_w", "crop_h"} - set(df.columns)
    if missing:
        raise ValueError(f"{folder}: FlowCam list lacks column(s) {sorted(missing)}")
    df = df.rename(columns={"id": "particle_id", "particle_id": "particle_id"})
    meta = [c for c in df.columns if c not in ("collage", "crop_x", "crop_y", "crop_w", "crop_h")]
    out = pd.DataFrame({"source": [_collage_path(folder, c) for c in df["collage"]]})
    for c in ("crop_x", "crop_y", "crop_w", "crop_h"):  # missing -> -1: rejected as bad_crop_box
        out[c] = pd.to_numeric(df[c], errors="coerce").fillna(-1).astype("int64")
    for c in meta:
        out[c if c not in RESERVED else f"meta_{c}"] = df[c].to_numpy()
    return out
