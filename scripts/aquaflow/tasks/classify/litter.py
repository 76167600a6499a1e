"""Marine litter from tile predictions: per-image counts and covered area, and overlay images.

Each tile of a drone image gets one class (a litter category or a background such as water or
sand). Per image and category: the number of tiles and the area they cover on the ground,
area_m2 = tiles x (tile_px x gsd_cm / 100)^2 for full tiles (edge tiles count their part inside
the image), as the published PLD module does, with the ground sampling distance from the config.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from aquaflow.data import imaging

SUMMARY_COLUMNS = ["image", "category", "litter", "tiles", "area_m2", "share_of_image"]

PALETTE = [
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
]


def tile_area_m2(w_px: np.ndarray, h_px: np.ndarray, gsd_cm: float) -> np.ndarray:
    return np.asarray(w_px, float) * np.asarray(h_px, float) * (gsd_cm / 100.0) ** 2


def summarise(preds: pd.DataFrame, classes: list[str], litter: list[str], gsd_cm: float) -> pd.DataFrame:
    """Per image x class: tiles predicted as that class and their ground area (m²).

    `preds` needs columns image, tile_w, tile_h, top1_label. Every class appears for every image
    (0 when absent) so tables of different runs line up.
    """
    df = preds.assign(area=tile_area_m2(preds["tile_w"], preds["tile_h"], gsd_cm))
    total = df.groupby("image")["area"].sum()
    g = df.groupby(["image", "top1_label"]).agg(tiles=("area", "size"), area_m2=("area", "sum"))
    rows = []
    for image in sorted(df["image"].unique()):
        for cls in classes:
            tiles, area = (0, 0.0)
            if (image, cls) in g.index:
                tiles, area = int(g.loc[(image, cls), "tiles"]), float(g.loc[(image, cls), "area_m2"])
            rows.append((image, cls, cls in litter, tiles, area, area / float(total[image])))
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def colours(classes: list[str]) -> dict[str, tuple[int, int, int]]:
    return {c: PALETTE[i % len(PALETTE)] for i, c in enumerate(classes)}


def overlay(
    image: np.ndarray, tiles: pd.DataFrame, classes: list[str], litter: list[str], alpha: float = 0.45
) -> np.ndarray:
    """The image with litter tiles filled in their category colour, a grid, and a legend (RGB)."""
    out = image.copy()
    fill = image.copy()
    col = colours(classes)
    for r in tiles.itertuples(index=False):
        x, y, w, h = int(r.tile_x), int(r.tile_y), int(r.tile_w), int(r.tile_h)
        if r.top1_label in litter:
            cv2.rectangle(fill, (x, y), (x + w - 1, y + h - 1), col[r.top1_label], -1)
    out = cv2.addWeighted(fill, alpha, out, 1 - alpha, 0)
    for r in tiles.itertuples(index=False):
        x, y, w, h = int(r.tile_x), int(r.tile_y), int(r.tile_w), int(r.tile_h)
        thick = 2 if r.top1_label in litter else 1
        cv2.rectangle(
            out, (x, y), (x + w - 1, y + h - 1), col[r.top1_label] if thick == 2 else (90, 90, 90), thick
        )
    counts = tiles["top1_label"].value_counts()
    legend = [c for c in litter] + [c for c in classes if c not in litter]
    pad = 22
    band = np.full((pad * len(legend) + 8, out.shape[1], 3), 255, np.uint8)
    for i, c in enumerate(legend):
        y = 6 + i * pad
        cv2.rectangle(band, (8, y), (26, y + 16), col[c], -1)
        text = f"{c}: {int(counts.get(c, 0))} tile(s)" + ("" if c in litter else " (background)")
        cv2.putText(band, text, (34, y + 14), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return np.vstack([out, band])


def write_overlays(
    preds: pd.DataFrame,
    images: dict[str, str | Path],
    classes: list[str],
    litter: list[str],
    out: str | Path,
) -> list[Path]:
    """One overlay PNG per image (`images` maps image name -> file)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for image, tiles in preds.groupby("image"):
        src = images.get(str(image))
        if src is None:
            continue
        rgb = imaging.load(src).image
        path = out / f"{image}.png"
        cv2.imwrite(str(path), overlay(rgb, tiles, classes, litter)[:, :, ::-1])
        written.append(path)
    return written


def run(
    *,
    predictions: str | Path,
    card: str | Path,
    raw: str | Path,
    cfg: dict,
    table: str | Path,
    overlays: str | Path,
) -> pd.DataFrame:
    """The litter_summary step: per-image table (counts, m²) and one overlay PNG per image."""
    from aquaflow.io import read_json, write_tsv

    classes = read_json(card)["classes"]
    preds = pd.read_parquet(predictions)
    summary = summarise(preds, classes, cfg["categories"], cfg["gsd_cm"])
    write_tsv(summary, table)
    files = preds.drop_duplicates("image").set_index("image")["image_file"]
    write_overlays(preds, {k: Path(raw) / v for k, v in files.items()}, classes, cfg["categories"], overlays)
    return summary
