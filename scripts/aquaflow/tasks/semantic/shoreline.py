"""The water/land boundary of a class mask as polylines (camera images: pixel coordinates), and
PNG class masks: the outputs of semantic segmentation for images without georeferencing.

A polyline runs where the water class meets another class: the sub-pixel contour (marching
squares, level 0.5) of the water mask through the midpoints between neighbouring water and land
pixel centres, with pixel (row i, column j) centred at x = j + 0.5, y = i + 0.5 (pixel coordinates
from the image's top-left corner, y down), then mapped through the raster's transform (the
identity for a camera image). Nodata pixels are neither water nor land: no line runs along them,
nor along the image's border.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from aquaflow.data.rasters import NODATA_LABEL
from aquaflow.io import atomic_path

IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def polylines(labels: np.ndarray, water: int, transform: Sequence[float] = IDENTITY) -> list[np.ndarray]:
    """The boundaries of class `water` with the other classes of a class mask (N x 2 arrays of
    x, y), longest first."""
    from skimage import measure

    valid = labels != NODATA_LABEL
    field = (labels == water).astype(np.float64)
    a, b, c, d, e, f = transform[:6]
    lines = []
    for rc in measure.find_contours(field, 0.5, mask=valid):
        x, y = rc[:, 1] + 0.5, rc[:, 0] + 0.5
        lines.append(np.column_stack([a * x + b * y + c, d * x + e * y + f]))
    return sorted(lines, key=lambda p: -_length(p))


def _length(line: np.ndarray) -> float:
    return float(np.hypot(*np.diff(line, axis=0).T).sum()) if len(line) > 1 else 0.0


def write_geojson(lines: list[np.ndarray], path: str | Path, properties: dict[str, Any]) -> None:
    """A GeoJSON FeatureCollection of LineStrings with their length and whether each is closed
    (a lake or an island) besides `properties`."""
    features = [
        {
            "type": "Feature",
            "geometry": {"type": "LineString", "coordinates": np.round(line, 3).tolist()},
            "properties": {
                **properties,
                "length": round(_length(line), 3),
                "closed": bool(len(line) > 2 and np.array_equal(line[0], line[-1])),
            },
        }
        for line in lines
    ]
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps({"type": "FeatureCollection", "features": features}) + "\n")


def write_shoreline(class_path: str | Path, water: int, path: str | Path, name: str) -> dict[str, Any]:
    """The shoreline of a class raster (read whole: a camera image) as GeoJSON; returns the number
    of polylines and their total length (pixels, or the CRS's unit)."""
    import rasterio

    with rasterio.open(class_path) as src:
        labels, transform = src.read(1), tuple(src.transform)[:6]
    lines = polylines(labels, water, transform)
    write_geojson(lines, path, {"class": name})
    return {"polylines": len(lines), "length": sum(_length(p) for p in lines)}


def write_png_mask(class_path: str | Path, path: str | Path) -> None:
    """The class raster as an 8-bit PNG of class indices (255: no data), read whole."""
    import rasterio
    from PIL import Image

    with rasterio.open(class_path) as src:
        labels = src.read(1)
    with atomic_path(path) as tmp:
        Image.fromarray(labels).save(tmp, format="PNG")  # uint8: mode L
