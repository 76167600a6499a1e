"""Per-file and per-hour tables of a sound campaign, from its per-window predictions.

Each has the number of windows, the seconds of recording, the windows per predicted class
(`n_<class>`), the occupancy (share of windows whose class is not the absent class, e.g. `none`:
the fraction of time a vessel is heard) and the mean and minimum expected distance (km) over
those windows. Hours are UTC clock hours where the file name gives the recording start; for a
recording without one, hours count from its start (`hour_in_file`, with its `file`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

COLUMNS = ["file", "station", "start_s", "end_s", "start_utc", "label", "expected_km"]


def _summarise(groups, classes: list[str], absent: str) -> pd.DataFrame:
    def one(df: pd.DataFrame) -> pd.Series:
        present = df["label"] != absent
        out = {"windows": len(df), "seconds": float((df["end_s"] - df["start_s"]).sum())}
        out |= {f"n_{c}": int((df["label"] == c).sum()) for c in classes}
        out["occupancy"] = float(present.mean()) if len(df) else 0.0
        km = df.loc[present, "expected_km"]
        out["mean_km"] = float(km.mean()) if len(km) else np.nan
        out["min_km"] = float(km.min()) if len(km) else np.nan
        return pd.Series(out)

    out = groups.apply(one, include_groups=False).reset_index()
    counts = ["windows", *[f"n_{c}" for c in classes]]
    return out.astype(dict.fromkeys(counts, "int64"))


def per_file(table: pd.DataFrame, absent: str, classes: list[str] | None = None) -> pd.DataFrame:
    classes = classes or sorted(table["label"].unique())
    starts = table.groupby("file")["start_utc"].min().rename("start_utc")
    out = _summarise(table.groupby(["file", "station"], sort=True), classes, absent)
    return out.merge(starts, on="file", how="left")


def per_hour(table: pd.DataFrame, absent: str, classes: list[str] | None = None) -> pd.DataFrame:
    classes = classes or sorted(table["label"].unique())
    utc = pd.to_datetime(table["start_utc"], utc=True)
    known = utc.notna()
    keyed = table.assign(
        hour_utc=utc.dt.floor("h"),
        file=np.where(known, "", table["file"]),
        hour_in_file=np.where(known, -1, np.floor(table["start_s"] / 3600)).astype(int),
    )
    groups = keyed.groupby(["station", "hour_utc", "file", "hour_in_file"], sort=True, dropna=False)
    return _summarise(groups, classes, absent)
