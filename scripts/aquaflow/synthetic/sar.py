"""Synthetic SAR-like sea scenes for oil-spill segmentation (SYNTHETIC: made-up scenes with exact
labels, not satellite data; they exercise the georeferenced pipeline and the rare-class metrics).

Each scene is a single-band GeoTIFF of backscatter in dB on a UTM grid (EPSG:32631, 10 m pixels
by default) and a label raster on the same grid (0 sea, 1 oil, 255 nodata):
- sea: a smooth wind field (low-frequency random field) times multiplicative speckle, gamma
  distributed with `looks` looks (mean 1), as in multi-look intensity SAR;
- slicks (labelled oil): elongated, wavy-edged dark patches (backscatter damped 6-10 dB),
  rotated at random, with sharp edges;
- look-alikes (labelled sea): low-wind areas, broad dark patches with smooth edges and weaker
  damping (3-6 dB), the classic false alarm;
- a swath edge: a wedge of nodata (-9999) at one corner (no label there).

    python -m aquaflow.synthetic.sar OUT --scenes 4 --size 256 --seed 0
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

CRS = "EPSG:32631"
NODATA = -9999.0
CLASSES = ["sea", "oil"]


def smooth_field(rng: np.random.Generator, h: int, w: int, scale: float) -> np.ndarray:
    """A zero-mean, unit-variance random field smooth over about `scale` pixels (Fourier filter)."""
    noise = rng.normal(size=(h, w))
    fy, fx = np.fft.fftfreq(h)[:, None], np.fft.fftfreq(w)[None, :]
    field = np.fft.ifft2(np.fft.fft2(noise) * np.exp(-((fy**2 + fx**2) * (np.pi * scale) ** 2))).real
    return (field - field.mean()) / (field.std() + 1e-12)


def _blob(
    h: int, w: int, cy: float, cx: float, a: float, b: float, angle: float, wobble: np.ndarray
) -> np.ndarray:
    """Signed distance-like field (< 1 inside) of a rotated ellipse with a wavy edge."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    dy, dx = yy - cy, xx - cx
    u = dx * np.cos(angle) + dy * np.sin(angle)
    v = -dx * np.sin(angle) + dy * np.cos(angle)
    theta = np.arctan2(v / b, u / a)
    edge = 1 + sum(amp * np.cos(k * theta + ph) for k, (amp, ph) in enumerate(wobble, 2))
    return np.hypot(u / a, v / b) / edge


def scene(
    rng: np.random.Generator, size: int, slicks: int = 2, lookalikes: int = 2, looks: int = 4
) -> dict[str, Any]:
    """One scene: backscatter (dB, float32, nodata NODATA), labels (uint8) and the shapes drawn."""
    h = w = size
    wind = -14 + 1.5 * smooth_field(rng, h, w, size / 4)  # dB, a gentle wind field
    damping = np.zeros((h, w))
    labels = np.zeros((h, w), np.uint8)
    shapes = []
    for kind, count in (("slick", slicks), ("lookalike", lookalikes)):
        for _ in range(count):
            cy, cx = rng.uniform(0.15, 0.85, 2) * size
            angle = rng.uniform(0, np.pi)
            if kind == "slick":
                a, b = rng.uniform(0.08, 0.2) * size, rng.uniform(0.015, 0.04) * size
                wobble = np.column_stack([rng.uniform(0, 0.12, 3), rng.uniform(0, 2 * np.pi, 3)])
                inside = _blob(h, w, cy, cx, a, b, angle, wobble) < 1
                db = rng.uniform(6, 10)
                damping = np.maximum(damping, inside * db)
                labels[inside] = 1
            else:
                a, b = rng.uniform(0.1, 0.2) * size, rng.uniform(0.06, 0.12) * size
                r = _blob(h, w, cy, cx, a, b, angle, np.zeros((0, 2)))
                db = rng.uniform(3, 6)
                damping = np.maximum(damping, db * np.exp(-(r**2) * 1.5))  # smooth, diffuse edges
            shapes.append(
                {
                    "kind": kind,
                    "center_px": [float(cy), float(cx)],
                    "axes_px": [float(a), float(b)],
                    "angle_rad": float(angle),
                    "damping_db": float(db),
                }
            )
    intensity = 10 ** ((wind - damping) / 10) * rng.gamma(looks, 1 / looks, (h, w))
    image = (10 * np.log10(intensity)).astype(np.float32)
    yy, xx = np.mgrid[0:h, 0:w]
    swath = xx + yy < size * rng.uniform(0.05, 0.15)  # a nodata wedge at the top-left corner
    image[swath] = NODATA
    labels[swath] = 255
    return {"image": image, "labels": labels, "shapes": shapes}


def write(path: Path, data: np.ndarray, nodata: float, origin: tuple[float, float], pixel: float) -> None:
    import rasterio
    from affine import Affine

    profile = {
        "driver": "GTiff",
        "height": data.shape[0],
        "width": data.shape[1],
        "count": 1,
        "dtype": data.dtype.name,
        "crs": CRS,
        "nodata": nodata,
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
        "compress": "deflate",
        "transform": Affine(pixel, 0, origin[0], 0, -pixel, origin[1]),
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data, 1)
        dst.update_tags(SYNTHETIC="aquaflow.synthetic.sar: generated scene, not satellite data")


def make(
    out: str | Path, scenes: int = 4, size: int = 256, seed: int = 0, pixel: float = 10.0
) -> dict[str, Any]:
    """Write `scenes` scenes as OUT/images/scene_NN.tif + OUT/labels/scene_NN.tif (same grids,
    side by side on the map) and OUT/scenes.json (shapes, oil fraction per scene)."""
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "labels").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    index = {"synthetic": True, "classes": CLASSES, "crs": CRS, "pixel_m": pixel, "scenes": {}}
    for i in range(scenes):
        s = scene(rng, size)
        name = f"scene_{i:02d}.tif"
        origin = (500000.0 + i * size * pixel, 4600000.0)
        write(out / "images" / name, s["image"], NODATA, origin, pixel)
        write(out / "labels" / name, s["labels"], 255, origin, pixel)
        labelled = s["labels"] != 255
        index["scenes"][name] = {
            "oil_fraction": float((s["labels"][labelled] == 1).mean()),
            "shapes": s["shapes"],
        }
    (out / "scenes.json").write_text(json.dumps(index, indent=2) + "\n")
    return index


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--scenes", type=int, default=4)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    make(args.out, args.scenes, args.size, args.seed)


if __name__ == "__main__":
    main()
