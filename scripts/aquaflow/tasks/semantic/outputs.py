"""Georeferenced outputs of semantic segmentation: class and probability GeoTIFFs on the input's
grid (cloud-optimised: tiled, deflate, internal overviews) and the polygons of each class as a
GeoPackage with their area in m².

Class rasters hold class indices (uint8, nodata 255); probability rasters one band per class,
uint8 percent 0-100 (nodata 255). Both are written block by block and then copied to COG, so
memory does not grow with the raster's size.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np

from aquaflow.data.rasters import NODATA_LABEL, Grid, blocks
from aquaflow.io import atomic_path

NODATA_PROB = 255
BLOCK = 256  # GeoTIFF tile side


def _profile(grid: Grid, count: int) -> dict[str, Any]:
    from affine import Affine

    return {
        "driver": "GTiff",
        "height": grid.height,
        "width": grid.width,
        "count": count,
        "dtype": "uint8",
        "crs": grid.crs,
        "transform": Affine(*grid.transform),
        "nodata": NODATA_LABEL,
        "tiled": True,
        "blockxsize": BLOCK,
        "blockysize": BLOCK,
        "compress": "deflate",
    }


def _to_cog(tmp: Path, target: Path) -> None:
    import rasterio.shutil

    with atomic_path(target) as out:
        rasterio.shutil.copy(
            tmp, out, driver="COG", COMPRESS="DEFLATE", BLOCKSIZE=str(BLOCK), OVERVIEWS="AUTO"
        )


def write_prediction(
    blocks: Iterable[tuple[int, int, np.ndarray, np.ndarray]],
    grid: Grid,
    classes: Sequence[str],
    class_path: str | Path,
    prob_path: str | Path,
) -> dict[str, int]:
    """Write blended probability blocks (from tiling.predict_blocks) as the class GeoTIFF and the
    probability GeoTIFF; returns the pixel count of each class (valid pixels only)."""
    import rasterio
    from rasterio.windows import Window

    counts = np.zeros(len(classes), np.int64)
    class_path, prob_path = Path(class_path), Path(prob_path)
    work = [p.with_name(f".{p.name}.blocks.tif") for p in (class_path, prob_path)]
    with ExitStack() as stack:
        cls_ds = stack.enter_context(rasterio.open(work[0], "w", **_profile(grid, 1)))
        prob_ds = stack.enter_context(rasterio.open(work[1], "w", **_profile(grid, len(classes))))
        for r, c, probs, valid in blocks:
            window = Window(c, r, probs.shape[2], probs.shape[1])
            label = probs.argmax(axis=0).astype(np.uint8)
            label[~valid] = NODATA_LABEL
            pct = np.rint(probs * 100).astype(np.uint8)
            pct[:, ~valid] = NODATA_PROB
            cls_ds.write(label, 1, window=window)
            prob_ds.write(pct, window=window)
            counts += np.bincount(label[valid], minlength=len(classes))[: len(classes)]
        for ds, names in ((cls_ds, ["class"]), (prob_ds, [f"p_{c}" for c in classes])):
            for i, name in enumerate(names, 1):
                ds.set_band_description(i, name)
    try:
        for tmp, target in zip(work, (class_path, prob_path), strict=True):
            _to_cog(tmp, target)
    finally:
        for tmp in work:
            tmp.unlink(missing_ok=True)
    return dict(zip(classes, counts.tolist(), strict=True))


def pixel_area_m2(grid: Grid) -> float | None:
    """Area of one pixel in m² when the CRS is projected (None for geographic or no CRS)."""
    if not grid.crs:
        return None
    from pyproj import CRS

    crs = CRS.from_user_input(grid.crs)
    if not crs.is_projected:
        return None
    unit = crs.axis_info[0].unit_conversion_factor
    a, b, _, d, e, _ = grid.transform
    return abs(a * e - b * d) * unit * unit


def _areas_m2(geoms: np.ndarray, grid: Grid) -> np.ndarray:
    """Area of each polygon in m²: planar in a projected CRS, geodesic (WGS84) in a geographic one."""
    import shapely
    from pyproj import CRS, Geod

    if grid.crs and CRS.from_user_input(grid.crs).is_geographic:
        geod = Geod(ellps="WGS84")
        return np.array([abs(geod.geometry_area_perimeter(g)[0]) for g in geoms])
    unit = CRS.from_user_input(grid.crs).axis_info[0].unit_conversion_factor if grid.crs else 1.0
    return shapely.area(geoms) * unit * unit


def polygons(
    class_path: str | Path, classes: Sequence[str], skip: Sequence[str] = (), strip: int = 1024
) -> dict[str, Any]:
    """The polygons of each class of a class raster: shapes of strips of rows, merged across strip
    borders (an object cut by a strip or tile border is one polygon). Returns geometries (shapely,
    in the raster's CRS), class names, areas (m²) and pixel counts; classes in `skip` are left out."""
    import rasterio
    import shapely
    from rasterio import features
    from rasterio.windows import Window

    parts: dict[int, list[Any]] = {}
    with rasterio.open(class_path) as src:
        grid = Grid(src.crs.to_wkt() if src.crs else None, tuple(src.transform)[:6], src.height, src.width)
        for r, _, h, _ in blocks(src.height, 1, strip):
            window = Window(0, r, src.width, h)
            band = src.read(1, window=window)
            for geom, value in features.shapes(
                band, mask=band != NODATA_LABEL, transform=src.window_transform(window)
            ):
                parts.setdefault(int(value), []).append(shapely.geometry.shape(geom))
    skip_idx = {classes.index(s) for s in skip}
    geoms, names = [], []
    for k in sorted(parts):
        if k in skip_idx or k >= len(classes):
            continue
        merged = shapely.get_parts(shapely.union_all(parts[k]))
        geoms += [g for g in merged if g.area > 0]
        names += [classes[k]] * sum(1 for g in merged if g.area > 0)
    geoms_a = np.array(geoms, dtype=object)
    pixel = abs(grid.transform[0] * grid.transform[4] - grid.transform[1] * grid.transform[3])
    return {
        "geometry": geoms_a,
        "class": np.array(names, dtype=object),
        "area_m2": _areas_m2(geoms_a, grid) if len(geoms) else np.zeros(0),
        "pixels": np.rint(shapely.area(geoms_a) / pixel).astype(np.int64)
        if len(geoms)
        else np.zeros(0, np.int64),
        "crs": grid.crs,
    }


def write_polygons(found: dict[str, Any], path: str | Path, layer: str = "classes") -> None:
    """Write polygons (from `polygons`) as a GeoPackage layer: class, area_m2, pixels, geometry."""
    import pyogrio
    import shapely

    geometry = (
        shapely.to_wkb(np.array([shapely.MultiPolygon([g]) for g in found["geometry"]], dtype=object))
        if len(found["geometry"])
        else np.array([], dtype=object)
    )
    with atomic_path(path) as tmp:
        work = tmp.with_name(tmp.name + ".gpkg")  # GDAL wants the extension
        pyogrio.raw.write(
            work,
            geometry=geometry,
            field_data=[
                found["class"].astype(str),
                found["area_m2"].astype(np.float64),
                found["pixels"].astype(np.int64),
            ],
            fields=["class", "area_m2", "pixels"],
            geometry_type="MultiPolygon",
            crs=found["crs"],
            driver="GPKG",
            layer=layer,
        )
        os.replace(work, tmp)
