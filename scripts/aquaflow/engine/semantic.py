"""Semantic segmentation of georeferenced rasters on the engine: one raster in, its class and
probability GeoTIFFs (input's CRS and transform, COG), its class polygons (GeoPackage, m²) and a
summary out; with a label raster, its scores (IoU, Dice, pixel accuracy, FSS).

Prediction is tiled and blended in constant memory (`aquaflow.tasks.semantic.tiling`); scoring
reads the class raster and the labels whole (evaluation rasters, not campaign-sized ones).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from aquaflow.data.rasters import NODATA_LABEL, grid_of, read_labels, read_window
from aquaflow.tasks.semantic import outputs
from aquaflow.tasks.semantic.metrics import SemanticScores
from aquaflow.tasks.semantic.tiling import PredictFn, Tiling, predict_blocks

log = logging.getLogger(__name__)


def predict_raster(
    predict: PredictFn,
    card: dict[str, Any],
    image: str | Path,
    out: dict[str, str | Path],
    tiling: Tiling,
    background: Sequence[str] = (),
) -> dict[str, Any]:
    """Predict one raster into out[classes|probabilities|polygons]; returns its summary: pixels and
    area (m², projected CRS) per class, polygons per class, seconds. Classes in `background` get
    no polygons."""
    import rasterio

    classes = list(card["classes"])
    grid = grid_of(image)
    t0 = time.time()
    with rasterio.open(image) as src:

        def read(r: int, c: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
            return read_window(src, r, c, h, w, card["bands"], card["normalization"])

        blocks = predict_blocks(read, grid.height, grid.width, predict, tiling)
        counts = outputs.write_prediction(blocks, grid, classes, out["classes"], out["probabilities"])
    seconds = time.time() - t0
    found = outputs.polygons(out["classes"], classes, skip=background)
    outputs.write_polygons(found, out["polygons"])
    pixel = outputs.pixel_area_m2(grid)
    names = list(found["class"])
    return {
        "image": str(image),
        "height": grid.height,
        "width": grid.width,
        "pixels": counts,
        "area_m2": {k: (v * pixel if pixel else None) for k, v in counts.items()},
        "polygons": {k: names.count(k) for k in classes if k not in background},
        "seconds": seconds,
        "megapixels_per_second": grid.height * grid.width / 1e6 / max(seconds, 1e-9),
    }


def score_raster(class_path: str | Path, labels: str | Path, scores: SemanticScores) -> dict[str, Any]:
    """Add one predicted class raster and its label raster to `scores`; returns this raster's own
    figures too."""
    import rasterio

    with rasterio.open(class_path) as p, rasterio.open(labels) as t:
        if (p.height, p.width) != (t.height, t.width):
            raise ValueError(f"{labels}: {t.height}x{t.width} labels for a {p.height}x{p.width} raster")
        pred = p.read(1)
        truth = read_labels(t, 0, 0, t.height, t.width)
    valid = pred != NODATA_LABEL
    scores.add(truth, pred, valid)
    own = SemanticScores(scores.classes, scores.scales, scores.fss_classes)
    own.add(truth, pred, valid)
    return own.result()
