"""Report figures of a sound campaign: spectrograms of the most confident vessel windows."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import soundfile as sf

COLUMNS = ["seq", "source", "file", "window", "start_s", "end_s", "label", "confidence", "expected_km"]


def confident_spectrograms(table: pd.DataFrame, folder: str | Path, n: int, absent: str) -> list[Path]:
    """One PNG per window for the `n` windows (not of the absent class) with the highest
    confidence, each read from its recording (only that window, at the file's own rate)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = Path(folder)
    tmp = folder.with_name(f".{folder.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    pick = table[table["label"] != absent].sort_values(["confidence", "seq"], ascending=[False, True]).head(n)
    written = []
    for r in pick.itertuples(index=False):
        rate = sf.info(r.source).samplerate
        x, rate = sf.read(r.source, start=round(r.start_s * rate), stop=round(r.end_s * rate), always_2d=True)
        fig, ax = plt.subplots(figsize=(6, 3.2))
        ax.specgram(x.mean(axis=1), NFFT=1024, Fs=rate, noverlap=512, cmap="viridis")
        ax.set_yscale("symlog", linthresh=100)
        ax.set_xlabel("s from window start")
        ax.set_ylabel("Hz")
        when = f"{r.file} {r.start_s:.0f}-{r.end_s:.0f} s"
        ax.set_title(f"{when}: {r.label} ({r.confidence:.2f}), ~{r.expected_km:.1f} km")
        fig.tight_layout()
        name = f"{int(r.seq):06d}_{int(r.window):06d}_{r.label}.png"
        fig.savefig(tmp / name, dpi=80)
        plt.close(fig)
        written.append(folder / name)
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return written
