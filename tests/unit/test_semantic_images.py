"""Task semantic on camera images (no georeferencing): JPEG images paired with PNG masks, PNG class
masks and the water/land boundary as polylines in pixel coordinates, checked against generated
images with a known straight or curved shoreline."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import rasterio
import shapely
from PIL import Image

from aquaflow.engine import semantic
from aquaflow.tasks.semantic import shoreline
from aquaflow.tasks.semantic.tiling import Tiling

H, W = 48, 80
TRUTHS = {
    "straight": lambda x: 12.0 + 0.3 * x,
    "curved": lambda x: 24.0 + 9.0 * np.sin(2 * np.pi * x / 60.0),
}


def water_below(truth) -> np.ndarray:
    """Class mask: 0 (water) where a pixel's centre lies below the shoreline y = truth(x), 1 land."""
    yy, xx = np.mgrid[:H, :W] + 0.5
    return np.where(yy > truth(xx), 0, 1).astype(np.uint8)


def truth_line(truth) -> shapely.LineString:
    x = np.linspace(0.5, W - 0.5, 2000)
    return shapely.LineString(np.column_stack([x, truth(x)]))


@pytest.mark.parametrize("kind", sorted(TRUTHS))
def test_shoreline_is_one_polyline_within_a_pixel_of_the_truth(kind) -> None:
    labels = water_below(TRUTHS[kind])
    lines = shoreline.polylines(labels, water=0)
    assert len(lines) == 1
    line = lines[0]
    assert line[:, 0].min() == 0.5 and line[:, 0].max() == W - 0.5  # across the whole image
    assert shapely.hausdorff_distance(shapely.LineString(line), truth_line(TRUTHS[kind])) <= 1.0


def test_shoreline_skips_nodata_and_closes_around_a_lake() -> None:
    labels = np.ones((H, W), np.uint8)
    labels[10:20, 30:44] = 0  # a lake: one closed line around it
    labels[30:, :] = 0  # the sea
    labels[30:, 60:] = 255  # no data: no line along it
    lines = shoreline.polylines(labels, water=0)
    assert len(lines) == 2
    sea, lake = lines  # longest first
    assert np.array_equal(lake[0], lake[-1]) and not np.array_equal(sea[0], sea[-1])
    assert set(np.round(sea[:, 1], 6)) == {30.0}  # y = 30: midway between rows 29 and 30's centres
    assert sea[:, 0].min() == 0.5 and sea[:, 0].max() <= 60.0  # stops before the no-data pixels
    assert shapely.Polygon(lake).area == 10 * 14 - 4 / 8  # the pixels' edges, corners cut by 1/8 px²


def threshold_model(batch: np.ndarray) -> np.ndarray:
    """Class 1 (land) where band 1 is above 0 (standardised), class 0 (water) below."""
    p1 = 1 / (1 + np.exp(-4 * batch[:, 0]))
    return np.stack([1 - p1, p1], axis=1).astype(np.float32)


@pytest.mark.parametrize("kind", sorted(TRUTHS))
def test_camera_image_gives_a_png_mask_and_its_shoreline_in_pixels(tmp_path, kind) -> None:
    truth = water_below(TRUTHS[kind])
    rgb = np.where(truth[..., None] == 1, [200, 180, 150], [30, 60, 90]).astype(np.uint8)
    (tmp_path / "raw/images").mkdir(parents=True)
    (tmp_path / "raw/masks").mkdir()
    Image.fromarray(rgb).save(tmp_path / "raw/images/beach.jpg", quality=95)
    Image.fromarray(truth).save(tmp_path / "raw/masks/beach.png")
    data = {
        "images": "images",
        "labels": "masks",
        "label_extension": ".png",
        "extensions": [".jpg"],
        "vector_field": None,
        "split": {"val": 0.0, "test": 0.0, "seed": 0},
    }
    manifest = semantic.prepare(
        tmp_path / "raw", data, ["water", "land"], tmp_path / "m.parquet", tmp_path / "l"
    )
    assert list(manifest["labels"]) == [str(tmp_path / "raw/masks/beach.png")]
    listed = semantic.campaign_inputs([{"kind": "dataset"}], tmp_path / "raw", data, tmp_path / "in.parquet")
    assert list(listed["labels"]) == [str(tmp_path / "raw/masks/beach.png")]

    card = {"classes": ["water", "land"], "bands": [1], "normalization": {"mean": [115.0], "std": [40.0]}}
    settings = {"png_masks": True, "shoreline": "water"}
    paths = semantic.output_paths(tmp_path, "beach", settings)
    assert {k: p.name for k, p in paths.items() if k in ("mask_png", "shoreline")} == {
        "mask_png": "beach_classes.png",
        "shoreline": "beach_shoreline.geojson",
    }
    image = tmp_path / "raw/images/beach.jpg"
    summary = semantic.predict_raster(
        threshold_model, card, image, paths, Tiling(32, 8, 64, 4), ["water"], "water"
    )
    with Image.open(paths["mask_png"]) as png:
        assert png.mode == "L" and png.size == (W, H)
        np.testing.assert_array_equal(np.asarray(png), truth)  # the mask, back from the PNG
    with rasterio.open(paths["classes"]) as src:
        assert src.crs is None and src.transform == rasterio.Affine.identity()
    assert summary["pixels"] == {"water": int((truth == 0).sum()), "land": int((truth == 1).sum())}
    assert summary["area_m2"] == {"water": None, "land": None}  # pixels, not metres
    collection = json.loads(paths["shoreline"].read_text())
    (feature,) = collection["features"]
    assert feature["geometry"]["type"] == "LineString" and feature["properties"]["class"] == "water"
    assert summary["shoreline_polylines"] == 1
    assert summary["shoreline_length"] == pytest.approx(feature["properties"]["length"], abs=1e-3)
    line = shapely.LineString(feature["geometry"]["coordinates"])  # pixel coordinates
    assert shapely.hausdorff_distance(line, truth_line(TRUTHS[kind])) <= 1.0
    table = pd.read_parquet(tmp_path / "in.parquet")
    assert list(table["id"]) == ["beach"]
