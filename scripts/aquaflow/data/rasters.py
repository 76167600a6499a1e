"""Georeferenced rasters (GeoTIFF and anything GDAL opens, via rasterio): windowed reads with band
selection and a nodata mask, the tile grid of a raster, per-band statistics computed window by
window (constant memory), and vector labels rasterised onto a raster's grid.

Bands are numbered from 1 as in GDAL; a pixel is valid when every selected band is valid (the
dataset's nodata value / mask says so) and finite.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

NODATA_LABEL = 255  # label / class value of pixels that carry no label (ignored in loss and metrics)


@dataclass(frozen=True)
class Grid:
    """Where a raster sits: its CRS (WKT, or None), affine transform (6 numbers) and shape."""

    crs: str | None
    transform: tuple[float, ...]
    height: int
    width: int


def sample_valid_pixels(path: str | Path, bands: Sequence[int], n: int, seed: int) -> np.ndarray:
    """Up to n pixels (n x bands, float32) at seeded random positions where every band is valid
    (nodata, masked and non-finite pixels skipped); a few point reads, whatever the raster's size."""
    import rasterio

    rng = np.random.default_rng(seed)
    with rasterio.open(path) as src:
        flat = np.unique(rng.integers(0, src.height * src.width, size=4 * n))  # sorted: read locality
        rows, cols = np.divmod(flat, src.width)
        xs, ys = rasterio.transform.xy(src.transform, rows, cols)
        points = src.sample(zip(xs, ys, strict=True), indexes=list(bands), masked=True)
        values = np.ma.stack(list(points)).astype(np.float64)  # integer rasters too (uint16 bands)
    keep = ~np.ma.getmaskarray(values).any(axis=1) & np.isfinite(values.filled(np.nan)).all(axis=1)
    picked = values.data[keep].astype(np.float32)
    return picked[rng.permutation(len(picked))[:n]]


def grid_of(path: str | Path) -> Grid:
    import rasterio

    with rasterio.open(path) as src:
        crs = src.crs.to_wkt() if src.crs else None
        return Grid(crs, tuple(src.transform)[:6], src.height, src.width)


def starts(n: int, tile: int, stride: int) -> list[int]:
    """Tile origins along one axis of length n: every `stride`, the last one flush with the end
    (one origin 0 when the axis is shorter than a tile)."""
    if n <= tile:
        return [0]
    out = list(range(0, n - tile + 1, stride))
    if out[-1] != n - tile:
        out.append(n - tile)
    return out


def tile_windows(height: int, width: int, tile: int, stride: int) -> Iterator[tuple[int, int]]:
    """(row, col) origins of the tile grid covering a height x width raster, row by row."""
    for r in starts(height, tile, stride):
        for c in starts(width, tile, stride):
            yield r, c


def blocks(height: int, width: int, size: int) -> Iterator[tuple[int, int, int, int]]:
    """Non-overlapping (row, col, height, width) blocks of at most size x size covering a raster."""
    for r in range(0, height, size):
        for c in range(0, width, size):
            yield r, c, min(size, height - r), min(size, width - c)


def read_window(
    src: Any,
    row: int,
    col: int,
    height: int,
    width: int,
    bands: Sequence[int] | None = None,
    norm: dict[str, Sequence[float]] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Bands (float32, C x h x w) and the valid mask (h x w) of a window of an open rasterio
    dataset, standardised with `norm` {mean, std} per band when given; invalid pixels and parts
    of the window outside the raster read as 0."""
    from rasterio.windows import Window

    bands = list(bands or range(1, src.count + 1))
    window = Window(col, row, width, height)
    data = src.read(bands, window=window, boundless=True, fill_value=0, out_dtype="float32")
    masks = src.read_masks(bands, window=window, boundless=True)
    valid = np.all(masks > 0, axis=0) & np.all(np.isfinite(data), axis=0)
    if norm is not None:
        mean = np.asarray(norm["mean"], np.float32)[:, None, None]
        data = (data - mean) / np.asarray(norm["std"], np.float32)[:, None, None]
    data[:, ~valid] = 0.0
    return data, valid


def read_labels(src: Any, row: int, col: int, height: int, width: int) -> np.ndarray:
    """Band 1 of a label raster as uint8 class indices; nodata and outside pixels NODATA_LABEL."""
    from rasterio.windows import Window

    window = Window(col, row, width, height)
    labels = src.read(1, window=window, boundless=True, fill_value=NODATA_LABEL)
    mask = src.read_masks(1, window=window, boundless=True)
    out = labels.astype(np.uint8)
    out[mask == 0] = NODATA_LABEL
    return out


def band_statistics(
    paths: Sequence[str | Path], bands: Sequence[int] | None = None, block: int = 1024
) -> dict[str, list[float]]:
    """Mean and standard deviation of each selected band over the valid pixels of `paths`, read
    block by block (memory independent of raster size); float64 sums."""
    import rasterio

    total = None
    for path in paths:
        with rasterio.open(path) as src:
            chosen = list(bands or range(1, src.count + 1))
            if total is None:
                total = np.zeros((3, len(chosen)))
            for r, c, h, w in blocks(src.height, src.width, block):
                data, valid = read_window(src, r, c, h, w, chosen)
                px = data[:, valid].astype(np.float64)
                total += [np.full(len(chosen), px.shape[1]), px.sum(axis=1), (px**2).sum(axis=1)]
    if total is None or total[0].min() == 0:
        raise ValueError(f"no valid pixels to compute band statistics from in {list(map(str, paths))}")
    n, s, ss = total
    mean = s / n
    std = np.sqrt(np.maximum(ss / n - mean**2, 0.0))
    return {"mean": mean.tolist(), "std": np.where(std > 0, std, 1.0).tolist()}


def read_vector(path: str | Path, field: str, crs: str | None) -> tuple[np.ndarray, np.ndarray]:
    """Geometries (shapely) and the `field` values of a vector file, reprojected to `crs`."""
    import pyogrio
    import shapely

    meta, _, geometry, values = pyogrio.raw.read(path, columns=[field])
    geoms = shapely.from_wkb(geometry)
    if crs and meta.get("crs"):
        from pyproj import CRS, Transformer

        source, target = CRS.from_user_input(meta["crs"]), CRS.from_user_input(crs)
        if source != target:
            tr = Transformer.from_crs(source, target, always_xy=True)
            geoms = shapely.transform(geoms, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))
    return geoms, np.asarray(values[0])


def rasterize_labels(
    vector: str | Path, like: str | Path, field: str, classes: Sequence[str], background: int = 0
) -> np.ndarray:
    """A label raster on the grid of raster `like` from the polygons of `vector`: each polygon
    burns the index of its `field` value in `classes`; pixels no polygon covers get `background`.
    A value not in `classes` is an error that names it."""
    from rasterio import features

    grid = grid_of(like)
    geoms, values = read_vector(vector, field, grid.crs)
    index = {str(name): i for i, name in enumerate(classes)}
    unknown = sorted({str(v) for v in values} - set(index))
    if unknown:
        raise ValueError(f"{vector}: {field} values {unknown} are not among the classes {list(classes)}")
    from affine import Affine

    return features.rasterize(
        ((g, index[str(v)]) for g, v in zip(geoms, values, strict=True)),
        out_shape=(grid.height, grid.width),
        transform=Affine(*grid.transform),
        fill=background,
        dtype="uint8",
    )
