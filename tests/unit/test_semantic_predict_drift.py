"""`aquaflow predict` with a semantic segmentation model (an untrained tiny smp U-Net the test
writes as training would): rasters of a folder or one raster file -> class / probability COGs on
the input grid, class polygons, per-class pixels and m²; an unreadable raster is rejected with its
reason and counts reconcile. Drift of semantic campaigns: band pixels and class cover of a campaign
against the same model's reference on the training rasters; a brighter, noisier campaign of the
synthetic SAR scenes is flagged, an unshifted one (new scenes, same generator) is not."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import rasterio
import torch
from affine import Affine

from aquaflow import cli
from aquaflow.engine import reference, semantic
from aquaflow.monitoring import drift
from aquaflow.synthetic import sar

CRS = "EPSG:32631"
TRANSFORM = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 4600000.0)  # 10 m pixels
MODEL = {"arch": "Unet", "encoder": "tu-mobilenetv3_small_050", "decoder_channels": [8, 8, 8, 8, 8]}
TRAIN = {"tile": 32, "tile_overlap": 0, "epochs": 0}


def write_raster(path, data: np.ndarray) -> None:
    profile = {"driver": "GTiff", "height": data.shape[0], "width": data.shape[1], "count": 1}
    profile |= {"dtype": "float32", "crs": CRS, "transform": TRANSFORM, "nodata": -9999.0}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data.astype("float32"), 1)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A model folder as train_semantic writes it (card + safetensors), random weights."""
    from aquaflow.backends import smp_model
    from aquaflow.backends.smp_train import write_model

    folder = tmp_path_factory.mktemp("smp_model")
    torch.manual_seed(0)
    net = smp_model.build(MODEL, 1, 2)
    record = {"normalization": {"mean": [0.0], "std": [1.0]}}
    write_model(
        net,
        record,
        ["sea", "oil"],
        {**MODEL, "bands": [1]},
        TRAIN,
        folder / "model.safetensors",
        folder / "model_card.json",
    )
    return folder


def test_predict_rasters_of_a_folder_and_a_file(model, tmp_path) -> None:
    rng = np.random.default_rng(0)
    folder = tmp_path / "rasters"
    folder.mkdir()
    for name, shape in (("a", (48, 80)), ("b", (64, 40))):
        data = rng.normal(0, 1, shape)
        data[:4, :4] = -9999.0  # nodata corner: no class there
        write_raster(folder / f"{name}.tif", data)
    counts = rng.integers(1, 4000, (32, 32)).astype("uint16")  # an integer raster (Sentinel-2 DN)
    counts[0, :] = 0  # its nodata row
    with rasterio.open(
        folder / "c.tif",
        "w",
        driver="GTiff",
        height=32,
        width=32,
        count=1,
        dtype="uint16",
        crs=CRS,
        transform=TRANSFORM,
        nodata=0,
    ) as dst:
        dst.write(counts, 1)
    (folder / "broken.tif").write_bytes(b"II*\x00" + b"\x00" * 20)
    (folder / "notes.txt").write_text("not a raster")
    out = tmp_path / "out"
    assert (
        cli.main(["predict", str(folder), "--model", str(model), "-o", str(out), "--background", "sea"]) == 0
    )
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["seen"], summary["predicted"], summary["rejected"]) == (4, 3, 1)
    rejected = pd.read_parquet(out / "rejected.parquet")
    assert list(rejected["id"]) == ["broken"] and list(rejected["reason"]) == ["unreadable"]
    predictions = pd.read_parquet(out / "predictions.parquet").set_index("id")
    valid = 48 * 80 + 64 * 40 - 2 * 16 + 31 * 32
    assert sum(summary["per_class"].values()) == valid  # nodata pixels get no class
    assert sum(summary["area_m2"].values()) == pytest.approx(valid * 100.0)  # 10 m pixels
    assert (
        len(predictions.loc["c", "band_1"]) == 256 and min(predictions.loc["c", "band_1"]) >= 1
    )  # drift sample
    for rid in ("a", "b", "c"):
        row = predictions.loc[rid]
        with rasterio.open(folder / f"{rid}.tif") as src:
            grid = (src.crs, src.transform, src.shape)
        with rasterio.open(row["classes_path"]) as c, rasterio.open(row["probabilities_path"]) as p:
            assert (c.crs, c.transform, c.shape, p.count) == (*grid, 2)
            assert c.profile["tiled"] and p.profile["tiled"]  # cloud-optimised: tiled
            assert c.read(1)[0, 0] == 255  # a nodata pixel: no class
        assert row["polygons_oil"] >= 0 and "polygons_sea" not in predictions  # background: none
    # one raster file: the same class raster as the folder's run
    single = tmp_path / "single"
    assert cli.main(["predict", str(folder / "a.tif"), "--model", str(model), "-o", str(single)]) == 0
    one = pd.read_parquet(single / "predictions.parquet")
    assert list(one["id"]) == ["a"]
    with (
        rasterio.open(one["classes_path"].iloc[0]) as x,
        rasterio.open(predictions.loc["a", "classes_path"]) as y,
    ):
        assert np.array_equal(x.read(1), y.read(1))


DRIFT = {
    "detectors": ["stats", "label_shift"],
    "univariate_test": "ks",
    "alpha": 0.05,
    "correction": "holm",
    "permutations": 200,
    "sample_size": 200,
    "seed": 0,
    "reference": {"splits": ["train"], "sample_size": 1000},
    "batch": {"by": "folder", "size": 1000, "min_size": 2},
}
SETTINGS = {"predict": {"tile": 32, "overlap": 8, "block": 64, "batch": 4}, "background": ["sea"]}


def shifted(src_dir, out_dir, gain_db: float, noise_db: float, seed: int) -> None:
    """The scenes of src_dir, brighter by gain_db and noisier by noise_db (std), nodata kept."""
    out_dir.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for path in sorted(src_dir.glob("*.tif")):
        with rasterio.open(path) as src:
            data, profile = src.read(1), src.profile
        valid = data != src.nodata
        data[valid] += gain_db + rng.normal(0, noise_db, valid.sum())
        with rasterio.open(out_dir / path.name, "w", **profile) as dst:
            dst.write(data, 1)


def test_drift_flags_a_brighter_noisier_campaign_and_not_an_unshifted_one(model, tmp_path) -> None:
    from aquaflow.models.artifacts import locate

    weights, card = locate(model)
    sar.make(tmp_path / "train", scenes=3, size=64, seed=1)
    sar.make(tmp_path / "new", scenes=3, size=64, seed=2)  # new scenes, same generator
    campaign = tmp_path / "campaign"
    campaign.mkdir()
    (tmp_path / "new/images").rename(campaign / "same")
    shifted(campaign / "same", campaign / "shifted", gain_db=3.0, noise_db=2.0, seed=3)
    images = sorted((tmp_path / "train/images").glob("*.tif"))
    manifest = pd.DataFrame(
        {
            "id": [p.stem for p in images],
            "image": [str(p) for p in images],
            "labels": [str(tmp_path / "train/labels" / p.name) for p in images],
            "split": "train",
        }
    )
    manifest.to_parquet(tmp_path / "manifest.parquet")
    ref = reference.build_semantic_reference(tmp_path / "manifest.parquet", weights, card, DRIFT, SETTINGS)
    assert ref["cover"].shape == (3, 2) and np.allclose(ref["cover"].sum(1), 1)
    assert (
        ref["pixels"].shape == (3 * semantic.DRIFT_PIXELS, 1) and (ref["pixels"] > -9000).all()
    )  # no nodata
    assert ref["train_counts"].sum() > 0.8 * 3 * 64 * 64
    path = drift.save_reference(ref, tmp_path / "ref.npz", tmp_path / "ref.json")
    assert path["images"] == 3 and set(path["mean_cover"]) == {"sea", "oil"}

    from aquaflow.data import inputs

    table = inputs.build([{"kind": "folder", "path": str(campaign), "extensions": [".tif"]}], None)
    out = tmp_path / "out"
    out.mkdir()
    semantic.predict_table(table, weights, card, out, {**SETTINGS, "fss_scales": [], "fss_classes": []})
    files = {k: tmp_path / f"drift.{ext}" for k, ext in (("json", "json"), ("table", "tsv"), ("plot", "png"))}
    report = drift.run(
        predictions=out / "predictions.parquet",
        reference=tmp_path / "ref.npz",
        out=files,
        cfg=DRIFT,
        title="t",
    )
    verdicts = {b["batch"]: b for b in report["batches"]}
    print({k: {t: round(r["p_adjusted"], 4) for t, r in b["tests"].items()} for k, b in verdicts.items()})
    assert set(verdicts) == {"same", "shifted"} and report["unavailable"] == {}
    assert set(verdicts["same"]["tests"]) == {"ks_band_1", "cover_sea", "cover_oil"}
    assert verdicts["shifted"]["drift"] and verdicts["shifted"]["tests"]["ks_band_1"]["drift"]
    assert verdicts["same"]["drift"] is False
