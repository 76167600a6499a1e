"""Synthetic drone scenes of a beach with marine litter, with ground truth per item and per tile.

A scene is sand on one side of a wavy shoreline and water (with wave stripes) on the other, seen
from above at a known ground resolution (cm/px). Litter items of three categories are dropped on
it, at most one per tile of the tile grid and fully inside that tile, so the truth is exact both
per item and per tile:
- bottle: an elongated, pale translucent body with a coloured cap;
- bag: a large irregular whitish sheet;
- net: a tangle of green/orange ropes.
Tiles without an item are labelled by the majority background: sand or water.

Truth files per image (CSV): `<stem>_items.csv` (category, x, y, tile row/col, area_px, area_m2)
and `<stem>_tiles.csv` (row, col, x, y, label): the labels a tile classifier should give.
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

LITTER = ("bag", "bottle", "net")
BACKGROUND = ("sand", "water")
CLASSES = tuple(sorted(LITTER + BACKGROUND))


def _background(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """RGB background and a boolean water mask (shoreline x = f(y), water on the right)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    x0 = w * rng.uniform(0.35, 0.65)
    shore = x0 + 0.08 * w * np.sin(yy / h * rng.uniform(2, 5) + rng.uniform(0, 6))
    water = xx > shore
    sand = np.empty((h, w, 3), np.float32)
    sand[:] = (196, 180, 134)
    sand += rng.normal(0, 9, (h, w, 1))
    sand += cv2.GaussianBlur(rng.normal(0, 14, (h, w)).astype(np.float32), (0, 0), 6)[..., None]
    sea = np.empty((h, w, 3), np.float32)
    sea[:] = (34, 96, 128)
    waves = np.sin((xx * 0.9 + yy * 0.4) / rng.uniform(9, 14) + rng.normal(0, 0.3, (h, w)))
    sea += (waves * 12)[..., None] + rng.normal(0, 6, (h, w, 1))
    img = np.where(water[..., None], sea, sand)
    foam = np.abs(xx - shore) < 4  # a thin foam line on the shore
    img[foam] = img[foam] * 0.4 + 150
    return np.clip(img, 0, 255).astype(np.uint8), water


def _draw_item(
    rng: np.random.Generator, img: np.ndarray, mask: np.ndarray, category: str, cx: float, cy: float, r: float
) -> None:
    if category == "bottle":
        length, width = r * 2 * rng.uniform(0.8, 1.0), r * rng.uniform(0.4, 0.55)
        ang = rng.uniform(0, 180)
        colour = tuple(int(v) for v in rng.integers(190, 235, 3))
        for target, value in ((img, colour), (mask, 1)):
            cv2.ellipse(
                target, (round(cx), round(cy)), (round(length / 2), round(width / 2)), ang, 0, 360, value, -1
            )
        c, s = math.cos(math.radians(ang)), math.sin(math.radians(ang))
        cap = (round(cx + c * length / 2), round(cy + s * length / 2))
        cap_colour = (210, 40, 40) if rng.random() < 0.5 else (40, 60, 200)
        cv2.circle(img, cap, max(3, round(width / 3)), cap_colour, -1)
        cv2.circle(mask, cap, max(3, round(width / 3)), 1, -1)
        hi = (round(cx - s * width / 5), round(cy + c * width / 5))  # a specular stripe
        cv2.ellipse(img, hi, (round(length / 3), 2), ang, 0, 360, (250, 250, 250), -1)
    elif category == "bag":
        n = int(rng.integers(7, 11))
        angles = np.sort(rng.uniform(0, 2 * math.pi, n))
        radii = r * rng.uniform(0.55, 1.0, n)
        pts = (
            np.column_stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)])
            .round()
            .astype(np.int32)
        )
        overlay = img.copy()
        cv2.fillPoly(overlay, [pts], tuple(int(v) for v in rng.integers(225, 250, 3)))
        img[:] = cv2.addWeighted(overlay, 0.85, img, 0.15, 0)
        cv2.fillPoly(mask, [pts], 1)
        for _ in range(3):  # wrinkles
            p = pts[rng.integers(0, n)]
            cv2.line(img, (round(cx), round(cy)), (int(p[0]), int(p[1])), (200, 200, 195), 1)
    else:  # net
        colour = (60, 150, 70) if rng.random() < 0.5 else (230, 120, 30)
        for _ in range(int(rng.integers(5, 8))):
            k = int(rng.integers(4, 7))
            pts = (
                np.column_stack([cx + rng.uniform(-r, r, k), cy + rng.uniform(-r, r, k)])
                .round()
                .astype(np.int32)
            )
            cv2.polylines(img, [pts], False, colour, 3)
            cv2.polylines(mask, [pts], False, 1, 3)


def make_image(
    rng: np.random.Generator, rows: int, cols: int, tile: int = 128, litter_fraction: float = 0.35
) -> tuple[np.ndarray, pd.DataFrame, pd.DataFrame]:
    """One scene of rows x cols tiles: (RGB image, items table, tiles table)."""
    h, w = rows * tile, cols * tile
    img, water = _background(rng, h, w)
    items, tiles = [], []
    for r in range(rows):
        for c in range(cols):
            x, y = c * tile, r * tile
            label = "water" if water[y : y + tile, x : x + tile].mean() >= 0.5 else "sand"
            if rng.random() < litter_fraction:
                category = str(rng.choice(LITTER))
                rad = tile * (rng.uniform(0.25, 0.36) if category != "bottle" else rng.uniform(0.3, 0.4))
                margin = rad + 6
                cx = x + rng.uniform(margin, tile - margin)
                cy = y + rng.uniform(margin, tile - margin)
                m = np.zeros((h, w), np.uint8)
                _draw_item(rng, img, m, category, cx, cy, rad)
                items.append((category, cx, cy, r, c, int(m.sum())))
                label = category
            tiles.append((r, c, x, y, label))
    return (
        img,
        pd.DataFrame(items, columns=["category", "x", "y", "row", "col", "area_px"]),
        pd.DataFrame(tiles, columns=["row", "col", "x", "y", "label"]),
    )


def write_dataset(
    folder: str | Path,
    n_images: int = 4,
    rows: int = 5,
    cols: int = 6,
    tile: int = 128,
    gsd_cm: float = 0.5,
    seed: int = 0,
    litter_fraction: float = 0.35,
    prefix: str = "drone",
) -> pd.DataFrame:
    """Write <folder>/images/<prefix>NN.jpg and truth/<stem>_{items,tiles}.csv; return all tiles."""
    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "truth").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    frames = []
    for k in range(n_images):
        stem = f"{prefix}{k + 1:02d}"
        img, items, tiles = make_image(rng, rows, cols, tile, litter_fraction)
        cv2.imwrite(str(folder / "images" / f"{stem}.jpg"), img[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 92])
        items = items.assign(image=stem, area_m2=items["area_px"] * (gsd_cm / 100) ** 2)
        items.to_csv(folder / "truth" / f"{stem}_items.csv", index=False)
        tiles.to_csv(folder / "truth" / f"{stem}_tiles.csv", index=False)
        frames.append(tiles.assign(image=stem))
    return pd.concat(frames, ignore_index=True)


def main(argv: list[str] | None = None) -> None:
    """python -m aquaflow.synthetic.litter OUT [--images N] [--zip] [--seed S]"""
    import argparse
    import shutil

    ap = argparse.ArgumentParser(description="Write synthetic drone images of beach litter and truth.")
    ap.add_argument("out")
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--rows", type=int, default=6)
    ap.add_argument("--cols", type=int, default=8)
    ap.add_argument("--gsd-cm", type=float, default=0.5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--zip", action="store_true", help="also pack OUT into OUT.zip")
    a = ap.parse_args(argv)
    tiles = write_dataset(a.out, a.images, a.rows, a.cols, gsd_cm=a.gsd_cm, seed=a.seed)
    if a.zip:
        shutil.make_archive(a.out, "zip", a.out)
    print(f"{a.out}: {a.images} images, tiles per label: {tiles['label'].value_counts().to_dict()}")


if __name__ == "__main__":
    main()
