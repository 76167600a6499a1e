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


def _strip_shapes(band: np.ndarray, keep: np.ndarray, row: int) -> tuple[np.ndarray, np.ndarray]:
    """Class values and polygons (pixel coordinates: x = column, y = row, so that a polygon's area is
    its pixel count) of the 4-connected regions of one strip of rows starting at `row`."""
    import shapely
    from affine import Affine
    from rasterio import features

    mask = keep[band]
    if not mask.any():
        return np.zeros(0, np.int64), np.array([], dtype=object)
    found = list(features.shapes(band, mask=mask, connectivity=4, transform=Affine(1, 0, 0, 0, 1, row)))
    geoms = np.array([shapely.geometry.shape(g) for g, _ in found] or [], dtype=object)
    return np.array([int(v) for _, v in found], np.int64), geoms


def _reaches(geoms: np.ndarray, side: int, row: int) -> np.ndarray:
    """Which polygons (pixel coordinates) have a bound (1: top, 3: bottom) on `row`."""
    import shapely

    return shapely.bounds(geoms)[:, side] == row if len(geoms) else np.zeros(0, bool)


class _PolygonWriter:
    """Appends finished polygons (pixel coordinates) to a GeoPackage layer in batches, in the
    raster's CRS and transform, with class, area_m2 and pixels."""

    def __init__(self, path: Path, grid: Grid, classes: Sequence[str], layer: str, batch: int) -> None:
        self.path, self.grid, self.classes, self.layer, self.batch = path, grid, classes, layer, batch
        self.values: list[np.ndarray] = []
        self.geoms: list[np.ndarray] = []
        self.pending = 0
        self.written = False
        self.counts = np.zeros(len(classes), np.int64)

    def add(self, values: np.ndarray, geoms: np.ndarray) -> None:
        if len(geoms):
            self.values.append(values)
            self.geoms.append(geoms)
            self.pending += len(geoms)
        if self.pending >= self.batch:
            self.flush()

    def flush(self) -> None:
        import pyogrio
        import shapely

        if self.written and not self.pending:
            return
        values = np.concatenate(self.values) if self.values else np.zeros(0, np.int64)
        pixel = np.concatenate(self.geoms) if self.geoms else np.array([], dtype=object)
        self.values, self.geoms, self.pending = [], [], 0
        a, b, c, d, e, f = self.grid.transform
        world = shapely.transform(
            pixel, lambda p: np.column_stack([a * p[:, 0] + b * p[:, 1] + c, d * p[:, 0] + e * p[:, 1] + f])
        )
        self.counts += np.bincount(values, minlength=len(self.classes))[: len(self.classes)]
        pyogrio.raw.write(
            self.path,
            geometry=shapely.to_wkb(np.array([shapely.MultiPolygon([g]) for g in world], dtype=object))
            if len(world)
            else np.array([], dtype=object),
            field_data=[
                np.array([self.classes[v] for v in values], dtype=object).astype(str),
                _areas_m2(world, self.grid) if len(world) else np.zeros(0),
                np.rint(shapely.area(pixel)).astype(np.int64) if len(pixel) else np.zeros(0, np.int64),
            ],
            fields=["class", "area_m2", "pixels"],
            geometry_type="MultiPolygon",
            crs=self.grid.crs,
            driver="GPKG",
            layer=self.layer,
            append=self.written,
        )
        self.written = True


def write_polygons(
    class_path: str | Path,
    classes: Sequence[str],
    path: str | Path,
    skip: Sequence[str] = (),
    strip: int = BLOCK,
    batch: int = 4096,
    layer: str = "classes",
) -> dict[str, int]:
    """Polygonise a class raster into a GeoPackage layer (class, area_m2, pixels, one MultiPolygon
    per 4-connected region of each class not in `skip`), streaming: the raster is read strip by strip
    of rows; a polygon that does not reach the strip's lower edge is finished and written (in
    batches of `batch`), one that does is kept open and merged with the next strip's polygons that
    reach its upper edge, so that an object across strip borders is one polygon and memory grows
    with the raster's width, not its area. Returns the number of polygons of each class."""
    import rasterio
    import shapely
    from rasterio.windows import Window

    skip_idx = {classes.index(s) for s in skip}
    keep = np.array([k < len(classes) and k not in skip_idx for k in range(256)])
    path = Path(path)
    with rasterio.open(class_path) as src, atomic_path(path) as tmp:
        grid = Grid(src.crs.to_wkt() if src.crs else None, tuple(src.transform)[:6], src.height, src.width)
        work = tmp.with_name(tmp.name + ".gpkg")  # GDAL wants the extension
        writer = _PolygonWriter(work, grid, classes, layer, batch)
        open_values, open_geoms = np.zeros(0, np.int64), np.array([], dtype=object)
        try:
            for r, _, h, _ in blocks(src.height, 1, strip):
                values, geoms = _strip_shapes(src.read(1, window=Window(0, r, src.width, h)), keep, r)
                top = _reaches(geoms, 1, r) & np.isin(values, open_values)
                merged_v, merged_g = [values[~top]], [geoms[~top]]
                for k in np.unique(open_values):  # open polygons with the new ones that touch them
                    both = np.concatenate([open_geoms[open_values == k], geoms[top & (values == k)]])
                    parts = shapely.get_parts(shapely.union_all(both))
                    merged_v.append(np.full(len(parts), k, np.int64))
                    merged_g.append(parts)
                values, geoms = np.concatenate(merged_v), np.concatenate(merged_g)
                bottom = _reaches(geoms, 3, r + h) if r + h < src.height else np.zeros(len(geoms), bool)
                writer.add(values[~bottom], geoms[~bottom])
                open_values, open_geoms = values[bottom], geoms[bottom]
            writer.flush()
            os.replace(work, tmp)
        finally:
            work.unlink(missing_ok=True)
    return {c: int(writer.counts[i]) for i, c in enumerate(classes) if i not in skip_idx}
