"""Across campaigns: counts per predicted class per campaign (the time series scientists want)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from aquaflow.io import read_json, write_tsv


def table(summaries: dict[str, str | Path]) -> pd.DataFrame:
    """One row per (campaign, class) with the count, plus seen/predicted/rejected rows per campaign."""
    rows = []
    for campaign, path in summaries.items():
        s = read_json(path)
        model = s.get("model_id", "")
        for key in ("seen", "predicted", "rejected"):
            rows.append((campaign, model, "total", key, s[key]))
        for cls, n in s["per_class"].items():
            rows.append((campaign, model, "class", cls, n))
    return pd.DataFrame(rows, columns=["campaign", "model_id", "scope", "name", "count"])


def plot(df: pd.DataFrame, path: str | Path) -> None:
    """Grouped bars: one group per class, one bar per campaign."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    wide = df[df["scope"] == "class"].pivot_table(
        index="name", columns="campaign", values="count", aggfunc="sum", fill_value=0, sort=False
    )
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(wide) * max(1, wide.shape[1])), 4))
    if wide.empty:
        ax.text(0.5, 0.5, "no predictions", ha="center", va="center")
    else:
        wide.plot.bar(ax=ax)
        ax.set_ylabel("objects (top-1)")
        ax.set_xlabel("")
        ax.legend(title="campaign")
    ax.set_title("Predicted objects per class and campaign")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def summarise(
    summaries: dict[str, str | Path], table_path: str | Path, plot_path: str | Path
) -> pd.DataFrame:
    """The campaign_summary step."""
    df = table(summaries)
    write_tsv(df, table_path)
    plot(df, plot_path)
    return df
